//! TFRecord files of `tf.train.Example`s as a data set: one file or a glob of shards, plain, GZIP
//! or ZLIB, every record's checksums checked on open (see [`crate::formats::tfrecord`]).
//!
//! A [`FeatureMapping`] says which feature is the model input and which the label. The input
//! feature is turned into one example of the model's input ([`InputSpec`]):
//! - a bytes feature holding an encoded image (PNG, JPEG, GIF, BMP) is decoded, converted and
//!   resized exactly as the image-folder data set does it, when the input is an image
//!   (`[height, width, 1|3|4]`, float);
//! - a bytes feature feeds a string input as it is (one or more strings per example);
//! - float and int64 lists are reshaped to the input's shape (`tf.io.FixedLenFeature(shape)`),
//!   int64 values becoming floats when the input is float.
//!
//! Labels (an int64 or float list of the same length in every record) are read on open, in the
//! same pass that checks the checksums, and kept in memory; inputs are decoded only when a batch
//! asks for them, in parallel, from the records' offsets.
//!
//! Order: records are addressed by position (files in sorted order, records in file order), so
//! the batch loader shuffles them with its seeded per-epoch permutation of the whole data set.
//! That is a uniform shuffle, what `tf.data`'s `shuffle(buffer_size)` gives only when the buffer
//! holds every record; a smaller buffer shuffles within a sliding window, which tfload does not
//! imitate. `--no-shuffle` reads the records in file order, as `TFRecordDataset` without a
//! shuffle does.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, Axis, IxDyn};
use prost::Message;
use rayon::prelude::*;

use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::formats::images::{ColorMode, ImageSpec};
use crate::formats::tfrecord::{expand, Compression, OnCorrupt, RecordSpan, Shard};
use crate::model::signature::TensorSpec;
use crate::proto::{feature, Example, Feature};
use crate::tensor::dtype::DType;
use crate::tensor::TensorData;

/// Which features of each `tf.train.Example` are the model input and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureMapping {
    /// Key of the input feature (`image/encoded`).
    pub input: String,
    /// Key of the label feature (`image/class/label`); `None` for prediction, where the records
    /// may have no label (every example then gets label 0).
    pub label: Option<String>,
}

/// What one example of the model input is: its shape without the batch axis, and its dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// Shape of one example (`[8, 8, 1]`).
    pub shape: Vec<usize>,
    /// Element type the model takes.
    pub dtype: DType,
}

impl InputSpec {
    /// One example of a signature input: its shape without the batch axis, which must be known.
    pub fn of(input: &TensorSpec) -> Result<InputSpec> {
        let dims = input
            .shape
            .dims()
            .filter(|d| d.len() > 1)
            .and_then(|d| d[1..].iter().map(|&d| d.map(|d| d as usize)).collect::<Option<Vec<_>>>());
        let shape = dims.ok_or_else(|| {
            Error::DataMismatch(format!(
                "the model's input `{}` is {} {}, and TFRecord features are reshaped to one known example shape, so every dimension after the batch must be known",
                input.key, input.dtype, input.shape
            ))
        })?;
        // `elements` multiplies the dims unchecked: a hostile signature must not overflow it.
        if shape.iter().try_fold(1usize, |product, &d| product.checked_mul(d)).is_none() {
            return Err(Error::DataMismatch(format!(
                "the model's input `{}` has shape {}, whose element count overflows; the SavedModel is corrupt",
                input.key, input.shape
            )));
        }
        Ok(InputSpec { shape, dtype: input.dtype })
    }

    /// The image size and channels, when the input is a float image `[height, width, 1|3|4]`.
    fn image(&self) -> Option<ImageSpec> {
        let [height, width, channels] = self.shape[..] else { return None };
        let color_mode = ColorMode::from_channels(channels)?;
        matches!(self.dtype, DType::Float32).then_some(ImageSpec { height, width, color_mode })
    }

    fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// How TFRecord files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TfRecordOptions {
    /// Compression of the files (`Auto` recognises it per file).
    pub compression: Compression,
    /// Skip (and count) records that fail their checksum instead of failing.
    pub on_corrupt: OnCorrupt,
}

/// `tf.train.Example` records from TFRecord files, addressed by position.
#[derive(Debug)]
pub struct TfRecordDataset {
    origin: String,
    shards: Vec<Shard>,
    /// (shard, record in shard) of each example.
    positions: Vec<(usize, usize)>,
    mapping: FeatureMapping,
    input: InputSpec,
    decode: InputDecoding,
    labels: TensorData,
}

/// How the input feature becomes an input example; fixed by the first record.
#[derive(Debug, Clone, Copy, PartialEq)]
enum InputDecoding {
    Image(ImageSpec),
    Strings,
    Numbers,
}

/// One feature's values.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    Bytes(Vec<Vec<u8>>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
}

impl Values {
    fn of(feature: &Feature) -> Values {
        match &feature.kind {
            Some(feature::Kind::BytesList(list)) => Values::Bytes(list.value.clone()),
            Some(feature::Kind::FloatList(list)) => Values::Floats(list.value.clone()),
            Some(feature::Kind::Int64List(list)) => Values::Ints(list.value.clone()),
            None => Values::Floats(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Values::Bytes(v) => v.len(),
            Values::Floats(v) => v.len(),
            Values::Ints(v) => v.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Values::Bytes(_) => "bytes",
            Values::Floats(_) => "float",
            Values::Ints(_) => "int64",
        }
    }

    fn describe(&self) -> String {
        format!("{} ({} value{})", self.kind(), self.len(), if self.len() == 1 { "" } else { "s" })
    }
}

/// Labels gathered on open, one row of `width` values per record.
enum LabelColumn {
    Ints(Vec<i64>),
    Floats(Vec<f32>),
}

impl TfRecordDataset {
    /// Opens the files `pattern` names (a path or a glob), checks every record and reads the
    /// labels. Fails on the first record that lacks a mapped feature or holds the wrong kind,
    /// naming the file, the record and the features it has.
    pub fn open(
        pattern: &Path,
        mapping: FeatureMapping,
        input: InputSpec,
        options: TfRecordOptions,
    ) -> Result<TfRecordDataset> {
        let files = expand(pattern)?;
        let mut reader = LabelReader { mapping: &mapping, input: &input, decode: None, width: None, column: None };
        let mut shards = Vec::with_capacity(files.len());
        for file in &files {
            shards.push(Shard::open(file, options.compression, options.on_corrupt, |record, span, data| {
                reader.visit(file, record, span, data)
            })?);
        }
        let positions: Vec<(usize, usize)> =
            shards.iter().enumerate().flat_map(|(s, shard)| (0..shard.len()).map(move |r| (s, r))).collect();
        if positions.is_empty() {
            return Err(Error::TfRecord {
                path: pattern.to_path_buf(),
                problem: format!("holds no readable record ({} file(s))", files.len()),
            });
        }
        let decode = reader.decode.expect("set by the first record");
        let labels = reader.labels(positions.len());
        Ok(TfRecordDataset { origin: pattern.display().to_string(), shards, positions, mapping, input, decode, labels })
    }

    /// The files read, in example order.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(Shard::path).collect()
    }

    /// Records left out as corrupt (with [`OnCorrupt::Skip`]).
    pub fn skipped_records(&self) -> usize {
        self.shards.iter().map(Shard::skipped).sum()
    }

    /// All labels, first axis the example.
    pub fn labels(&self) -> &TensorData {
        &self.labels
    }

    /// The model input of example `index`, `[1, ...shape]`.
    fn input_of(&self, index: usize) -> Result<TensorData> {
        let (s, r) = self.positions[index];
        let shard = &self.shards[s];
        let example = decode_example(shard.path(), r, shard.span(r), &shard.read(r)?)?;
        let values = feature_values(&example, &self.mapping.input, shard.path(), r, shard.span(r))?;
        let at = |problem: String| example_error(shard.path(), r, shard.span(r), problem);
        match (self.decode, values) {
            (InputDecoding::Image(spec), Values::Bytes(images)) if images.len() == 1 => {
                let origin = PathBuf::from(format!(
                    "{}, record {r} (offset {}), feature `{}`",
                    shard.path().display(),
                    shard.span(r).offset,
                    self.mapping.input
                ));
                Ok(TensorData::Float32(spec.load_bytes(&images[0], &origin)?.insert_axis(Axis(0)).into_dyn()))
            }
            (_, values) => self.reshape(values).map_err(at),
        }
    }

    /// One example's values as a `[1, ...shape]` tensor of the input's dtype.
    fn reshape(&self, values: Values) -> std::result::Result<TensorData, String> {
        let described = values.describe();
        if values.len() != self.input.elements() {
            return Err(format!(
                "feature `{}` is {described}, but the model input takes {} values per example (shape {:?})",
                self.mapping.input,
                self.input.elements(),
                self.input.shape
            ));
        }
        let mut shape = vec![1];
        shape.extend(&self.input.shape);
        let shape = IxDyn(&shape);
        let tensor = match (values, self.input.dtype) {
            (Values::Floats(v), _) => TensorData::Float32(ArrayD::from_shape_vec(shape, v).expect("sized")),
            (Values::Ints(v), DType::Float32) => TensorData::Float32(
                ArrayD::from_shape_vec(shape, v.into_iter().map(|x| x as f32).collect()).expect("sized"),
            ),
            (Values::Ints(v), _) => TensorData::Int64(ArrayD::from_shape_vec(shape, v).expect("sized")),
            (Values::Bytes(v), _) => {
                let strings =
                    v.into_iter().map(String::from_utf8).collect::<std::result::Result<Vec<_>, _>>().map_err(|_| {
                        format!(
                            "feature `{}` holds bytes that are not UTF-8 text, which tfload feeds only as images",
                            self.mapping.input
                        )
                    })?;
                TensorData::String(ArrayD::from_shape_vec(shape, strings).expect("sized"))
            }
        };
        Ok(tensor)
    }
}

/// The features of the first record of the files `pattern` names, `key (kind (n values))`
/// sorted by key: what a user picks `--feature` and `--label` from.
pub fn first_record_features(pattern: &Path, options: TfRecordOptions) -> Result<Vec<String>> {
    let file = expand(pattern)?.remove(0);
    let mut first = None;
    Shard::open(&file, options.compression, options.on_corrupt, |record, span, data| {
        if first.is_none() {
            first = Some(decode_example(&file, record, span, data)?);
        }
        Ok(())
    })?;
    Ok(first.as_ref().map(listed_features).unwrap_or_default())
}

/// `key (kind (n values))` for each feature of `example`, sorted by key.
fn listed_features(example: &Example) -> Vec<String> {
    let features = example.features.iter().flat_map(|f| &f.feature);
    let mut listed: Vec<String> = features.map(|(key, f)| format!("{key} ({})", Values::of(f).describe())).collect();
    listed.sort();
    listed
}

/// Reads the labels (and checks the input feature's kind) of each record during the open scan.
struct LabelReader<'a> {
    mapping: &'a FeatureMapping,
    input: &'a InputSpec,
    decode: Option<InputDecoding>,
    width: Option<usize>,
    column: Option<LabelColumn>,
}

impl LabelReader<'_> {
    fn visit(&mut self, path: &Path, record: usize, span: RecordSpan, data: &[u8]) -> Result<()> {
        let example = decode_example(path, record, span, data)?;
        let at = |problem: String| example_error(path, record, span, problem);
        let input = feature_values(&example, &self.mapping.input, path, record, span)?;
        let decode = input_decoding(&input, self.input, &self.mapping.input).map_err(at)?;
        if *self.decode.get_or_insert(decode) != decode {
            return Err(at(format!(
                "feature `{}` is {}, unlike in the first record",
                self.mapping.input,
                input.describe()
            )));
        }
        let Some(label_key) = &self.mapping.label else {
            return Ok(());
        };
        let label = feature_values(&example, label_key, path, record, span)?;
        let width = *self.width.get_or_insert(label.len());
        if label.len() != width {
            return Err(at(format!(
                "label `{label_key}` has {} values, and the first record's has {width}",
                label.len()
            )));
        }
        match (self.column.get_or_insert_with(|| empty_column(&label)), label) {
            (LabelColumn::Ints(all), Values::Ints(v)) => all.extend(v),
            (LabelColumn::Floats(all), Values::Floats(v)) => all.extend(v),
            (LabelColumn::Floats(all), Values::Ints(v)) => all.extend(v.into_iter().map(|x| x as f32)),
            (_, label) => {
                return Err(at(format!(
                    "label `{label_key}` is {}; labels must be int64 (class indices) or float lists",
                    label.describe()
                )))
            }
        }
        Ok(())
    }

    /// The labels of `count` records: `[count]` for one value per record, else `[count, width]`.
    fn labels(self, count: usize) -> TensorData {
        let width = self.width.unwrap_or(1);
        let shape = if width == 1 { IxDyn(&[count]) } else { IxDyn(&[count, width]) };
        match self.column.unwrap_or(LabelColumn::Ints(vec![0; count])) {
            LabelColumn::Ints(v) => TensorData::Int64(ArrayD::from_shape_vec(shape, v).expect("one row per record")),
            LabelColumn::Floats(v) => {
                TensorData::Float32(ArrayD::from_shape_vec(shape, v).expect("one row per record"))
            }
        }
    }
}

fn empty_column(first: &Values) -> LabelColumn {
    match first {
        Values::Floats(_) => LabelColumn::Floats(Vec::new()),
        _ => LabelColumn::Ints(Vec::new()),
    }
}

/// How a feature of this kind feeds `input`, or why it cannot.
fn input_decoding(values: &Values, input: &InputSpec, key: &str) -> std::result::Result<InputDecoding, String> {
    match (values, input.image(), input.dtype) {
        (Values::Bytes(v), Some(spec), _) if v.len() == 1 => Ok(InputDecoding::Image(spec)),
        (Values::Bytes(_), _, DType::String) => Ok(InputDecoding::Strings),
        (Values::Floats(_) | Values::Ints(_), _, dtype) if dtype != DType::String => Ok(InputDecoding::Numbers),
        _ => Err(format!(
            "feature `{key}` is {}, which cannot feed a model input of {} {:?}: bytes features feed images (one encoded image per record) and string inputs, float and int64 lists feed numeric inputs",
            values.describe(),
            input.dtype,
            input.shape
        )),
    }
}

fn decode_example(path: &Path, record: usize, span: RecordSpan, data: &[u8]) -> Result<Example> {
    Example::decode(data).map_err(|e| {
        example_error(
            path,
            record,
            span,
            format!("is not a tf.train.Example ({e}); tfload reads TFRecords of serialized tf.train.Example protos"),
        )
    })
}

/// The values of feature `key`, or an error listing the features the record has.
fn feature_values(example: &Example, key: &str, path: &Path, record: usize, span: RecordSpan) -> Result<Values> {
    let features = example.features.as_ref().map(|f| &f.feature);
    if let Some(feature) = features.and_then(|f| f.get(key)) {
        return Ok(Values::of(feature));
    }
    let listed = listed_features(example);
    let scored = features.into_iter().flatten().map(|(k, _)| (strsim::jaro_winkler(k, key), k));
    let close = scored.filter(|(score, _)| *score > 0.85).max_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, k)| k);
    Err(example_error(
        path,
        record,
        span,
        format!(
            "has no feature `{key}`{}. Its features are: {}. Map them with --feature KEY and --label KEY",
            close.map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default(),
            if listed.is_empty() { "none".to_string() } else { listed.join(", ") }
        ),
    ))
}

fn example_error(path: &Path, record: usize, span: RecordSpan, problem: String) -> Error {
    Error::Example { path: path.to_path_buf(), record, offset: span.offset, problem }
}

/// Stacks `[1, ...]` tensors of one dtype along the first axis.
fn stack(parts: Vec<TensorData>) -> TensorData {
    fn cat<T: Clone>(arrays: Vec<ArrayD<T>>) -> ArrayD<T> {
        let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(0), &views).expect("examples of one shape")
    }
    macro_rules! stack_as {
        ($($variant:ident),*) => {
            match &parts[0] {
                $(TensorData::$variant(_) => TensorData::$variant(cat(parts.into_iter().map(|p| match p {
                    TensorData::$variant(a) => a,
                    _ => unreachable!("one decoding per data set"),
                }).collect())),)*
                _ => unreachable!("inputs are float32, int64 or strings"),
            }
        };
    }
    stack_as!(Float32, Int64, String)
}

impl Dataset for TfRecordDataset {
    fn len(&self) -> usize {
        self.positions.len()
    }

    fn example_shape(&self) -> Vec<usize> {
        self.input.shape.clone()
    }

    fn label_classes(&self) -> Option<usize> {
        self.mapping.label.as_ref()?;
        match &self.labels {
            TensorData::Int64(labels) if labels.ndim() == 1 => {
                labels.iter().max().and_then(|&m| usize::try_from(m + 1).ok())
            }
            _ => None,
        }
    }

    fn skipped_records(&self) -> usize {
        TfRecordDataset::skipped_records(self)
    }

    fn describe(&self) -> String {
        let skipped = match TfRecordDataset::skipped_records(self) {
            0 => String::new(),
            n => format!("; {n} corrupt record(s) skipped"),
        };
        format!("{} ({} records in {} file(s){skipped})", self.origin, self.len(), self.shards.len())
    }

    fn gather(&self, indices: &[usize]) -> Result<Batch> {
        let inputs: Vec<TensorData> = indices.par_iter().map(|&i| self.input_of(i)).collect::<Result<_>>()?;
        Ok(Batch::new(stack(inputs), self.labels.select_rows(indices), indices.to_vec()))
    }

    fn all_labels(&self) -> Option<TensorData> {
        self.mapping.label.as_ref()?;
        Some(self.labels.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tfrecord::tests::write_records;
    use crate::proto::{BytesList, Features, FloatList, Int64List};

    fn example(pairs: Vec<(&str, feature::Kind)>) -> Vec<u8> {
        let feature = pairs.into_iter().map(|(k, v)| (k.to_string(), super::Feature { kind: Some(v) })).collect();
        Example { features: Some(Features { feature }) }.encode_to_vec()
    }

    fn floats_and_label(i: i64) -> Vec<u8> {
        example(vec![
            ("x", feature::Kind::FloatList(FloatList { value: (0..4).map(|v| (i * 10 + v) as f32).collect() })),
            ("y", feature::Kind::Int64List(Int64List { value: vec![i] })),
            ("name", feature::Kind::BytesList(BytesList { value: vec![b"n".to_vec()] })),
        ])
    }

    fn write(dir: &Path, name: &str, records: &[Vec<u8>]) -> PathBuf {
        let path = dir.join(name);
        write_records(&path, &records.iter().map(Vec::as_slice).collect::<Vec<_>>());
        path
    }

    fn open(pattern: &Path, input: &str, label: &str, shape: &[usize], dtype: DType) -> Result<TfRecordDataset> {
        let mapping = FeatureMapping { input: input.into(), label: Some(label.into()) };
        TfRecordDataset::open(pattern, mapping, InputSpec { shape: shape.to_vec(), dtype }, TfRecordOptions::default())
    }

    #[test]
    fn an_input_shape_whose_size_overflows_is_refused() {
        let huge = 1u64 << 40;
        let spec = TensorSpec {
            key: "x".into(),
            dtype: DType::Float32,
            shape: crate::tensor::shape::Shape::Known(vec![None, Some(huge), Some(huge)]),
            encoding: crate::model::signature::TensorEncoding::Dense { name: "x:0".into() },
        };
        let message = InputSpec::of(&spec).unwrap_err().to_string();
        assert!(message.contains("overflows"), "{message}");
    }

    #[test]
    fn float_features_are_reshaped_and_shards_follow_each_other() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "part-0.tfrecord", &[floats_and_label(0), floats_and_label(1)]);
        write(dir.path(), "part-1.tfrecord", &[floats_and_label(2)]);
        let dataset = open(&dir.path().join("part-*.tfrecord"), "x", "y", &[2, 2], DType::Float32).unwrap();
        assert_eq!((dataset.len(), dataset.label_classes()), (3, Some(3)));
        let batch = dataset.gather(&[2, 0]).unwrap();
        let expected = ArrayD::from_shape_vec(IxDyn(&[2, 2, 2]), vec![20., 21., 22., 23., 0., 1., 2., 3.]).unwrap();
        assert_eq!(batch.inputs, TensorData::Float32(expected));
        assert_eq!(batch.labels, TensorData::Int64(ndarray::arr1(&[2i64, 0]).into_dyn()));
        assert!(dataset.describe().contains("3 records in 2 file(s)"), "{}", dataset.describe());
    }

    #[test]
    fn a_missing_key_lists_the_features_the_record_has() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "a.tfrecord", &[floats_and_label(0)]);
        let error = open(&path, "x", "label", &[4], DType::Float32).unwrap_err().to_string();
        assert!(error.contains("record 0 (offset 0): has no feature `label`"), "{error}");
        assert!(error.contains("name (bytes (1 value)), x (float (4 values)), y (int64 (1 value))"), "{error}");
    }

    #[test]
    fn features_of_the_wrong_kind_or_size_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "a.tfrecord", &[floats_and_label(0)]);
        let error = open(&path, "name", "y", &[4], DType::Float32).unwrap_err().to_string();
        assert!(error.contains("feature `name` is bytes (1 value), which cannot feed"), "{error}");
        let error = open(&path, "x", "name", &[4], DType::Float32).unwrap_err().to_string();
        assert!(error.contains("label `name` is bytes"), "{error}");
        let dataset = open(&path, "x", "y", &[5], DType::Float32).unwrap();
        let error = dataset.gather(&[0]).unwrap_err().to_string();
        assert!(error.contains("is float (4 values), but the model input takes 5 values"), "{error}");
    }

    #[test]
    fn encoded_images_decode_like_image_files() {
        let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("saved_models/data/digits_5_9_images/7");
        let file = crate::formats::images::list_images(&image).unwrap()[0].clone();
        let bytes = std::fs::read(&file).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let record = example(vec![
            ("image/encoded", feature::Kind::BytesList(BytesList { value: vec![bytes] })),
            ("image/class/label", feature::Kind::Int64List(Int64List { value: vec![2] })),
        ]);
        let path = write(dir.path(), "a.tfrecord", &[record]);
        let dataset = open(&path, "image/encoded", "image/class/label", &[8, 8, 1], DType::Float32).unwrap();
        let spec = ImageSpec { height: 8, width: 8, color_mode: ColorMode::Grayscale };
        let expected = spec.load_batch(&[file]).unwrap();
        assert_eq!(dataset.gather(&[0]).unwrap().inputs, TensorData::Float32(expected));
    }
}
