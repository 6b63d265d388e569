"""Seeds, checksum validators and format-aware mutations for every file format tfload reads.

Stdlib + numpy only. Each validator looks at a (mutated) file and returns the list of
`(part, reason)` where the file's OWN checksums or stored lengths say it is corrupt; an empty list
means the file is self-consistent (it may still be nonsense, which tfload must refuse or accept
cleanly). The harness (fuzz.py) counts a success on a file with a non-empty list, for a command
that reads that part, as an "accepted-corrupt" failure.
"""

import gzip
import io
import json
import struct
import zipfile
import zlib

import numpy as np

# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli), as TFRecord and LevelDB tables use."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """The masked CRC-32C of TFRecord records and LevelDB block trailers."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf, pos):
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


# ---------------------------------------------------------------------------------------------
# Writers for seeds the repository does not hold (numpy-free, byte by byte)
# ---------------------------------------------------------------------------------------------


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(width=8, height=8):
    """An 8-bit grayscale PNG with a gradient."""
    rows = b"".join(b"\0" + bytes((x * 29 + y * 7) & 0xFF for x in range(width)) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def write_gif(width=8, height=8):
    """A GIF89a with a 2-colour palette; LZW codes stay 3 bits by sending a clear before each pixel."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0))
    out += b"\x00\x00\x00\xff\xff\xff"  # global colour table, 2 entries
    out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02"  # min code size 2
    bits = nbits = 0
    packed = bytearray()

    def emit(code):
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += 3
        while nbits >= 8:
            packed.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    for i in range(width * height):
        emit(4)  # clear
        emit((i // width + i % width) & 1)
    emit(5)  # end of information
    if nbits:
        packed.append(bits & 0xFF)
    for start in range(0, len(packed), 255):
        block = packed[start:start + 255]
        out += bytes([len(block)]) + block
    out += b"\x00\x3b"
    return bytes(out)


def write_bmp(width=8, height=8):
    """A 24-bit bottom-up BMP with BITMAPINFOHEADER."""
    row = (width * 3 + 3) & ~3
    pixels = b"".join(bytes((x * 30) & 0xFF for x in range(width * 3)).ljust(row, b"\0") for _ in range(height))
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 54) + header + pixels


def write_jpeg():
    """A baseline 8x8 grayscale JPEG: one block, DC category 0, end-of-block (one Huffman code each)."""
    def seg(marker, data):
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(data) + 2) + data

    dqt = b"\x00" + bytes([1] * 64)
    sof = struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00"
    dht_dc = b"\x00" + bytes([1] + [0] * 15) + b"\x00"
    dht_ac = b"\x10" + bytes([1] + [0] * 15) + b"\x00"
    sos = b"\x01\x01\x00\x00\x3f\x00"
    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return (b"\xff\xd8" + seg(0xE0, jfif) + seg(0xDB, dqt) + seg(0xC0, sof) + seg(0xC4, dht_dc)
            + seg(0xC4, dht_ac) + seg(0xDA, sos) + b"\x3f" + b"\xff\xd9")


def tfrecord_records(data):
    """Split a well-formed TFRecord file into its record payloads."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
    return out


def write_tfrecord(payloads):
    out = bytearray()
    for p in payloads:
        length = struct.pack("<Q", len(p))
        out += length + struct.pack("<I", masked_crc32c(length)) + p + struct.pack("<I", masked_crc32c(p))
    return bytes(out)


def write_npz(arrays, compressed):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def write_npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Validators: what the file's own checksums and stored lengths say
# ---------------------------------------------------------------------------------------------


def validate_tfrecord(data, part="records"):
    bad, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 12:
            return bad + [(part, f"record header cut short at offset {pos}")]
        length_bytes = data[pos:pos + 8]
        (stored,) = struct.unpack_from("<I", data, pos + 8)
        if stored != masked_crc32c(length_bytes):
            return bad + [(part, f"length CRC mismatch at offset {pos}")]
        (length,) = struct.unpack("<Q", length_bytes)
        if length + 16 > len(data) - pos:
            return bad + [(part, f"record at offset {pos} declares {length} bytes beyond the file")]
        payload = data[pos + 12:pos + 12 + length]
        (dcrc,) = struct.unpack_from("<I", data, pos + 12 + length)
        if dcrc != masked_crc32c(payload):
            bad.append((part, f"data CRC mismatch in record at offset {pos}"))
        pos += 12 + length + 4
    return bad


def validate_gzip_tfrecord(data):
    """GZIP members' CRC-32/ISIZE, then the TFRecord framing of what they hold."""
    try:
        inner = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        if data[:2] != b"\x1f\x8b":
            return []  # not GZIP any more: nothing self-declared
        return [("records", f"gzip: {error}")]
    return validate_tfrecord(inner)


def validate_npy(data, part="npy"):
    try:
        f = io.BytesIO(data)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(f, max_header_size=1 << 20)
    except Exception:  # noqa: BLE001 - unparseable header: not a self-declared length
        return []
    if dtype.hasobject:
        return []
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = len(data) - f.tell()
    if have < need:
        return [(part, f"header declares {need} data bytes, file holds {have}")]
    return []


def validate_npz(data):
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception:  # noqa: BLE001 - no readable central directory
        return []
    bad = []
    for info in infos:
        try:
            member = zf.read(info)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as error:
            bad.append((info.filename, f"zip: {error}"))
            continue
        except Exception:  # noqa: BLE001 - NotImplementedError for a mutated method etc.
            continue
        bad += validate_npy(member, info.filename)
    return bad


def _read_block(data, offset, size):
    if offset + size + 5 > len(data):
        raise IndexError(f"block at {offset}+{size} beyond the file")
    contents = data[offset:offset + size]
    trailer = data[offset + size:offset + size + 5]
    (stored,) = struct.unpack("<I", trailer[1:])
    return contents, trailer[0], stored == masked_crc32c(contents + trailer[:1])


def _block_entries(contents):
    (restarts,) = struct.unpack_from("<I", contents, len(contents) - 4)
    end = len(contents) - 4 - 4 * restarts
    if end < 0:
        raise ValueError("restart array larger than block")
    pos, key, out = 0, b"", []
    while pos < end:
        shared, pos = _varint(contents, pos)
        non_shared, pos = _varint(contents, pos)
        vlen, pos = _varint(contents, pos)
        key = key[:shared] + contents[pos:pos + non_shared]
        pos += non_shared
        out.append((key, contents[pos:pos + vlen]))
        pos += vlen
    return out


def index_blocks(data):
    """(bad, data-block entries) of a LevelDB table (TF's variables.index)."""
    if len(data) < 48 or data[-8:] != struct.pack("<Q", 0xDB4775248B80FB57):
        return [("index", "footer magic missing (bad magic number)")], []
    footer = data[-48:]
    _meta_off, pos = _varint(footer, 0)
    _meta_size, pos = _varint(footer, pos)
    idx_off, pos = _varint(footer, pos)
    idx_size, pos = _varint(footer, pos)
    bad, entries = [], []
    contents, _kind, ok = _read_block(data, idx_off, idx_size)
    if not ok:
        bad.append(("index", "index block checksum mismatch"))
    for _key, handle in _block_entries(contents):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        block, _kind, ok = _read_block(data, off, size)
        if not ok:
            bad.append(("index", f"data block at {off} checksum mismatch"))
        entries += _block_entries(block)
    return bad, entries


def validate_index(data):
    try:
        return index_blocks(data)[0]
    except Exception as error:  # noqa: BLE001
        if isinstance(error, IndexError):
            return [("index", str(error))]
        return []  # a repaired block that no longer parses: not self-declared


def bundle_entries(index_data):
    """(name, offset, size) of every tensor in a clean variables.index."""
    out = []
    for key, value in index_blocks(index_data)[1]:
        if not key:
            continue  # the BundleHeaderProto
        fields, pos = {}, 0
        while pos < len(value):
            tag, pos = _varint(value, pos)
            wire = tag & 7
            if wire == 0:
                fields[tag >> 3], pos = _varint(value, pos)
            elif wire == 2:
                n, pos = _varint(value, pos)
                pos += n
            elif wire == 5:
                pos += 4
            elif wire == 1:
                pos += 8
        out.append((key.decode(errors="replace"), fields.get(4, 0), fields.get(5, 0)))
    return out


def validate_variables_data(data, clean, entries):
    """Tensor bytes changed or cut off: the per-tensor CRC-32C in the index no longer matches."""
    bad = []
    for name, offset, size in entries:
        if data[offset:offset + size] != clean[offset:offset + size]:
            bad.append(("data", f"tensor {name} bytes differ from their index CRC-32C"))
    return bad


def validate_h5(data):
    """HDF5 superblock v0/v1: a stored end-of-file address beyond the real end (h5py refuses)."""
    if data[:8] != b"\x89HDF\r\n\x1a\n" or len(data) < 48 or data[8] > 1:
        return [] if data[:8] != b"\x89HDF\r\n\x1a\n" else ([("h5", "superblock cut short")] if len(data) < 48 else [])
    (base,) = struct.unpack_from("<Q", data, 24)
    (eof,) = struct.unpack_from("<Q", data, 40)
    if base + eof > len(data):
        return [("h5", f"stored end of file {base + eof} beyond the real one {len(data)}")]
    return []


def validate_png(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return []
    pos = 8
    while True:
        if pos + 12 > len(data):
            return [("image", f"chunk at {pos} cut short (no IEND)")]
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4:pos + 8]
        if pos + 12 + length > len(data):
            return [("image", f"chunk {kind!r} at {pos} declares {length} bytes beyond the file")]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if crc != zlib.crc32(data[pos + 4:pos + 8 + length]):
            return [("image", f"chunk {kind!r} at {pos} CRC mismatch")]
        if kind == b"IEND":
            return []
        pos += 12 + length


def validate_bmp(data):
    if data[:2] != b"BM" or len(data) < 54:
        return []
    (offbits,) = struct.unpack_from("<I", data, 10)
    hsize, width, height, _planes, bpp, compression = struct.unpack_from("<IiiHHI", data, 14)
    if hsize != 40 or compression != 0 or bpp not in (1, 4, 8, 24, 32) or width <= 0 or width > 1 << 16:
        return []
    need = offbits + ((width * bpp + 31) // 32) * 4 * abs(height)
    if need > len(data):
        return [("image", f"pixel array declared to end at {need}, file has {len(data)} bytes")]
    return []


# ---------------------------------------------------------------------------------------------
# Format-aware mutations: each returns (bytes, description) or None when it does not apply
# ---------------------------------------------------------------------------------------------

BIG = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFF0,
       (1 << 32) + 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, (1 << 64) - 16]


def _record_offsets(data):
    pos, out = 0, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, length))
        pos += 12 + length + 4
    return out


def mut_tfrecord_length(rng, data):
    """A record length set to a hostile value WITH its length CRC recomputed."""
    offsets = _record_offsets(data)
    if not offsets:
        return None
    pos, _ = rng.choice(offsets)
    value = rng.choice(BIG + [len(data), len(data) - pos])
    length = struct.pack("<Q", value & ((1 << 64) - 1))
    out = data[:pos] + length + struct.pack("<I", masked_crc32c(length)) + data[pos + 12:]
    return out, f"tfrecord length at {pos} = {value} (length CRC recomputed)"


def mut_tfrecord_payload(rng, data):
    """Bytes inside a record's Example changed WITH the data CRC recomputed (a valid record)."""
    records = tfrecord_records(data)
    i = rng.randrange(len(records))
    payload = bytearray(records[i])
    for _ in range(rng.randint(1, 4)):
        payload[rng.randrange(len(payload))] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    records[i] = bytes(payload)
    return write_tfrecord(records), f"tfrecord record {i} payload changed (data CRC recomputed)"


def mut_tfrecord_length_crc(rng, data):
    """A record's length CRC broken (not repaired)."""
    pos, _ = rng.choice(_record_offsets(data))
    out = bytearray(data)
    out[pos + 8] ^= 0x01
    return bytes(out), f"tfrecord length CRC at {pos + 8} flipped"


def _gz(mutator):
    def wrapped(rng, data):
        result = mutator(rng, gzip.decompress(data))
        if result is None:
            return None
        inner, desc = result
        return gzip.compress(inner, mtime=0), desc + ", re-gzipped"
    wrapped.__name__ = "gz_" + mutator.__name__
    return wrapped


def mut_gzip_trailer(rng, data):
    """GZIP CRC-32 or ISIZE of the member changed (not repaired)."""
    pos = len(data) - rng.choice([8, 4])
    out = bytearray(data)
    out[pos] ^= 0x5A
    return bytes(out), f"gzip trailer byte {pos} changed"


def _find_all(data, magic):
    out, pos = [], data.find(magic)
    while pos >= 0:
        out.append(pos)
        pos = data.find(magic, pos + 4)
    return out


def _zip_fields(data):
    """Offsets of (local header, central header) records of a zip."""
    return _find_all(data, b"PK\x03\x04"), _find_all(data, b"PK\x01\x02")


def mut_zip_crc(rng, data):
    """A member's CRC-32 changed in both its local and central headers (not repaired)."""
    locs, cens = _zip_fields(data)
    if not cens:
        return None
    i = rng.randrange(min(len(locs), len(cens)))
    value = struct.pack("<I", rng.getrandbits(32))
    out = bytearray(data)
    out[locs[i] + 14:locs[i] + 18] = value
    out[cens[i] + 16:cens[i] + 20] = value
    return bytes(out), f"zip member {i} CRC-32 set to {value.hex()}"


def mut_zip_sizes(rng, data):
    """A member's compressed or uncompressed size set to a hostile value (local + central)."""
    locs, cens = _zip_fields(data)
    if not cens:
        return None
    i = rng.randrange(min(len(locs), len(cens)))
    which = rng.choice(["compressed", "uncompressed"])
    value = rng.choice([0, 1, 0xFFFFFFFE, 0xFFFFFFFF, 0x7FFFFFFF, 1 << 30])
    out = bytearray(data)
    lo = 18 if which == "compressed" else 22
    ce = 20 if which == "compressed" else 24
    out[locs[i] + lo:locs[i] + lo + 4] = struct.pack("<I", value)
    out[cens[i] + ce:cens[i] + ce + 4] = struct.pack("<I", value)
    return bytes(out), f"zip member {i} {which} size = {value}"


_BOMB = {}


def mut_zip_bomb(rng, data):
    """An npz whose `y` member inflates to 400 MB of zeros (about 400 KB compressed)."""
    if "bomb" not in _BOMB:
        header = {"descr": "<i8", "fortran_order": False, "shape": (381 * (1 << 20) // 8,)}
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        raw = buf.getvalue()
        crc = zlib.crc32(raw)
        parts = [comp.compress(raw)]
        chunk = bytes(1 << 20)
        for _ in range(400_000_000 // len(chunk)):
            crc = zlib.crc32(chunk, crc)
            parts.append(comp.compress(chunk))
        parts.append(comp.flush())
        _BOMB["bomb"] = (b"".join(parts), crc, len(raw) + (400_000_000 // len(chunk)) * len(chunk))
    compressed, crc, size = _BOMB["bomb"]
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in src.infolist():
            if info.filename != "y.npy":
                zf.writestr(info.filename, src.read(info))
    blob = bytearray(out.getvalue())
    # Append the pre-compressed member by hand: a local header, the data, then a new central dir.
    eocd = blob.rfind(b"PK\x05\x06")
    (cd_size, cd_off) = struct.unpack_from("<II", blob, eocd + 12)
    (count,) = struct.unpack_from("<H", blob, eocd + 10)
    central = bytes(blob[cd_off:cd_off + cd_size])
    body = bytes(blob[:cd_off])
    name = b"y.npy"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(compressed), size, len(name), 0)
    entry = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(compressed), size,
                        len(name), 0, 0, 0, 0, 0, len(body))
    new_body = body + local + name + compressed
    new_central = central + entry + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count + 1, count + 1, len(new_central), len(new_body), 0)
    return new_body + new_central + end, "npz zip bomb: y.npy inflates to 400 MB"


def _npy_header_bounds(data):
    if data[:6] != b"\x93NUMPY":
        return None
    if data[6] == 1:
        (hlen,) = struct.unpack_from("<H", data, 8)
        return 10, hlen
    (hlen,) = struct.unpack_from("<I", data, 8)
    return 12, hlen


def _with_npy_header(data, header_text, version=1):
    start, hlen = _npy_header_bounds(data)
    body = data[start + hlen:]
    text = header_text.encode("latin1")
    pad = (-(len(text) + 1 + (10 if version == 1 else 12))) % 64
    text = text + b" " * pad + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + body
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text + body


def mut_npy_nesting(rng, data):
    """The shape written with deeply nested brackets or parentheses."""
    depth = rng.choice([8, 16, 22, 26, 40, 200])
    opener, closer = rng.choice([("(", ")"), ("[", "]"), ("{", "}")])
    shape = opener * depth + "4, 8, 8, 1" + closer * depth
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape
    return _with_npy_header(data, text), f"npy shape nested {depth} deep with {opener}{closer}"


def mut_npy_header_len(rng, data):
    """The header length field set to a hostile value (versions 1 and 2)."""
    if rng.random() < 0.5:
        value = rng.choice([0, 1, 0x7FFF, 0xFFFF])
        return data[:6] + b"\x01\x00" + struct.pack("<H", value) + data[10:], f"npy v1 header length = {value}"
    value = rng.choice([0xFFFFFFFF, 0xFFFFFF00, 1 << 31, 100_000_000])
    return data[:6] + b"\x02\x00" + struct.pack("<I", value) + data[10:], f"npy v2 header length = {value}"


def mut_npy_shape(rng, data):
    """A well-formed header that declares a hostile shape or dtype."""
    shape = rng.choice(["(4, 8, 8, 1)", "(0, 8, 8, 1)", "(-1, 8, 8, 1)", "(4611686018427387904, 8, 8, 1)",
                        "(1073741824, 8, 8, 1)", "(4, 8, 8)", "()", "(4, 8, 8, 1, 1)", "(18446744073709551615,)"])
    descr = rng.choice(["<f4", "<f4", "<f8", ">f4", "|u1", "<i8", "|O", "<U4", "<c8", "V16", "<f2"])
    order = rng.choice(["False", "False", "True"])
    text = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, order, shape)
    return _with_npy_header(data, text, rng.choice([1, 2])), f"npy header {descr} {shape} fortran={order}"


def mut_index_block(rng, data):
    """A byte inside an index/data block changed WITH the block CRC recomputed."""
    footer = data[-48:]
    _o, p = _varint(footer, 0)
    _s, p = _varint(footer, p)
    off, p = _varint(footer, p)
    size, _ = _varint(footer, p)
    blocks = [(off, size)]
    contents = data[off:off + size]
    for _k, handle in _block_entries(contents):
        o, q = _varint(handle, 0)
        s, _ = _varint(handle, q)
        blocks.append((o, s))
    o, s = rng.choice(blocks)
    block = bytearray(data[o:o + s])
    where = rng.choice(["restarts", "any", "any"])
    if where == "restarts" and s >= 4:
        block[-4:] = struct.pack("<I", rng.choice([0, 1, 0xFF, 0xFFFF, 0x3FFFFFFF, 0xFFFFFFFF]))
    else:
        i = rng.randrange(s)
        block[i] = rng.choice([0, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    kind = data[o + s:o + s + 1]
    fixed = bytes(block) + kind + struct.pack("<I", masked_crc32c(bytes(block) + kind))
    return data[:o] + fixed + data[o + s + 5:], f"index block at {o} {where} changed (block CRC recomputed)"


def mut_index_footer(rng, data):
    """A block handle in the footer set to a hostile offset or size (magic kept)."""
    field = rng.randrange(4)
    footer = bytearray(data[-48:])
    values, p = [], 0
    for _ in range(4):
        v, p = _varint(footer, p)
        values.append(v)
    values[field] = rng.choice([0, 1, len(data), 1 << 31, (1 << 63) - 1, (1 << 64) - 1])
    enc = bytearray()
    for v in values:
        while True:
            b = v & 0x7F
            v >>= 7
            enc.append(b | (0x80 if v else 0))
            if not v:
                break
    if len(enc) > 40:
        return None
    new_footer = bytes(enc).ljust(40, b"\0") + data[-8:]
    return data[:-48] + new_footer, f"index footer handle field {field} = {values[field]}"


def mut_h5_eof(rng, data):
    """The superblock's end-of-file address moved (not repaired)."""
    value = rng.choice([len(data) + 1, len(data) + 4096, len(data) * 2, (1 << 63), len(data) - 1, 0])
    return data[:40] + struct.pack("<Q", value) + data[48:], f"h5 EOF address = {value}"


def mut_png_length(rng, data):
    """A chunk length set to a hostile value (CRC not repaired)."""
    pos, chunks = 8, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunks.append(pos)
        pos += 12 + length
    pos = rng.choice(chunks)
    value = rng.choice([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 13, 1 << 20])
    return data[:pos] + struct.pack(">I", value) + data[pos + 4:], f"png chunk length at {pos} = {value}"


def mut_png_ihdr(rng, data):
    """IHDR width/height/depth/colour set to hostile values WITH the chunk CRC recomputed."""
    w, h, depth, colour, comp, filt, inter = struct.unpack_from(">IIBBBBB", data, 16)
    field = rng.choice(["width", "height", "depth", "colour", "interlace"])
    value = {"width": rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 16]),
             "height": rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 16]),
             "depth": rng.choice([0, 1, 3, 16, 255]), "colour": rng.choice([1, 2, 3, 4, 6, 7]),
             "interlace": rng.choice([1, 2])}[field]
    vals = {"width": w, "height": h, "depth": depth, "colour": colour, "interlace": inter}
    vals[field] = value
    ihdr = struct.pack(">IIBBBBB", vals["width"], vals["height"], vals["depth"], vals["colour"], comp, filt,
                       vals["interlace"])
    chunk = _png_chunk(b"IHDR", ihdr)
    return data[:8] + chunk + data[33:], f"png IHDR {field} = {value} (CRC recomputed)"


def mut_gif_screen(rng, data):
    """Logical screen or image descriptor width/height set to hostile values."""
    which = rng.choice(["screen", "image"])
    w = rng.choice([0, 1, 16, 0xFFFF, 8])
    h = rng.choice([0, 1, 0xFFFF, 8])
    pos = 6 if which == "screen" else data.find(b"\x2c", 13) + 5
    return data[:pos] + struct.pack("<HH", w, h) + data[pos + 4:], f"gif {which} size {w}x{h}"


def mut_bmp_header(rng, data):
    """BMP width/height/bpp/offset fields set to hostile values."""
    field, pos, fmt = rng.choice([("width", 18, "<i"), ("height", 22, "<i"), ("bpp", 28, "<H"),
                                  ("offbits", 10, "<I"), ("compression", 30, "<I"), ("colours", 46, "<I")])
    value = rng.choice({"<i": [0, -1, 1 << 30, -(1 << 31), 0x7FFFFFFF, 65536],
                        "<H": [0, 1, 2, 16, 32, 64, 0xFFFF],
                        "<I": [0, 1, 3, 0xFFFFFFFF, 1 << 31, 256]}[fmt])
    return data[:pos] + struct.pack(fmt, value) + data[pos + struct.calcsize(fmt):], f"bmp {field} = {value}"


def mut_jpeg_sof(rng, data):
    """The frame's height/width/components set to hostile values."""
    pos = data.find(b"\xff\xc0") + 5
    field = rng.choice(["height", "width", "components", "sampling"])
    if field in ("height", "width"):
        value = rng.choice([0, 1, 0xFFFF, 0x8000])
        off = pos + (0 if field == "height" else 2)
        return data[:off] + struct.pack(">H", value) + data[off + 2:], f"jpeg SOF {field} = {value}"
    if field == "components":
        value = rng.choice([0, 2, 3, 4, 255])
        return data[:pos + 4] + bytes([value]) + data[pos + 5:], f"jpeg SOF components = {value}"
    value = rng.choice([0x00, 0x44, 0xFF, 0x41])
    return data[:pos + 6] + bytes([value]) + data[pos + 7:], f"jpeg SOF sampling = {value:#x}"


def mut_json(rng, data):
    """One value of the contract record replaced by a hostile one (JSON stays valid)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [i])

    walk(doc, [])
    path = rng.choice(paths[1:])
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    choice = rng.choice(["null", "neg", "nan", "huge", "empty_str", "empty_list", "delete", "type", "biglist", "inf"])
    value = {"null": None, "neg": -1, "nan": float("nan"), "huge": 1 << 70, "empty_str": "", "empty_list": [],
             "type": {"x": 1}, "biglist": list(range(5000)), "inf": float("inf")}.get(choice)
    if choice == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif choice == "delete":
        parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return json.dumps(doc, indent=1).encode(), f"json {'/'.join(map(str, path))} -> {choice}"
