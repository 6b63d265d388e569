# Shared by scripts/setup.sh and scripts/tflib.sh (source it, do not run it): the pinned
# TensorFlow version and the libtensorflow folder layout tfload's build expects.
#   FOLDER/libtensorflow_cc.so.2, FOLDER/libtensorflow_framework.so.2   the wheel's libraries
#   FOLDER/libtensorflow.so, FOLDER/libtensorflow_framework.so           what `-ltensorflow ...` finds
#   FOLDER/tensorflow.pc                                                 what tensorflow-sys asks pkg-config for

tflib_requirements="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/requirements.txt"

# The version scripts/requirements.txt pins (tensorflow-cpu==X); build.rs reads the same line.
tflib_pinned_version() {
    sed -n 's/^tensorflow-cpu==\([^ #]*\).*/\1/p' "$tflib_requirements" | head -n1
}

# tflib_write FOLDER SOURCE VERSION: makes FOLDER a libtensorflow folder for the libraries in
# SOURCE (the same folder, or the wheel's tensorflow/ folder, which FOLDER then links to).
# Nothing changes in a folder that is already set up for VERSION.
# tensorflow.pc is rewritten only when its text changes: build.rs reruns (and tfload recompiles)
# when it is touched.
tflib_write() {
    local out="$1" src="$2" version="$3" lib
    mkdir -p "$out"
    # Physical paths: a symlinked folder (a worktree's .tflib) gives the same tensorflow.pc text.
    out="$(cd "$out" && pwd -P)"
    src="$(cd "$src" && pwd -P)"
    for lib in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
        if [[ ! -e "$src/$lib" ]]; then
            echo "tfload: $src/$lib is missing; a libtensorflow folder needs libtensorflow_cc.so.2 and libtensorflow_framework.so.2" >&2
            return 1
        fi
        if [[ "$src" != "$out" ]]; then
            ln -sfn "$src/$lib" "$out/$lib"
        fi
    done
    # Links that already resolve are left alone, so adopting a set-up folder changes nothing.
    [[ -e "$out/libtensorflow.so" ]] || ln -sfn libtensorflow_cc.so.2 "$out/libtensorflow.so"
    [[ -e "$out/libtensorflow_framework.so" ]] || ln -sfn libtensorflow_framework.so.2 "$out/libtensorflow_framework.so"
    local pc
    pc="$(cat <<PC
prefix=$out
libdir=\${prefix}

Name: tensorflow
Description: TensorFlow C API from the tensorflow-cpu $version wheel
Version: $version
Libs: -L\${libdir} -ltensorflow -ltensorflow_framework
Cflags:
PC
)"
    if [[ ! -f "$out/tensorflow.pc" || "$(cat "$out/tensorflow.pc")" != "$pc" ]]; then
        printf '%s\n' "$pc" > "$out/tensorflow.pc.tmp"
        mv "$out/tensorflow.pc.tmp" "$out/tensorflow.pc"
    fi
}
