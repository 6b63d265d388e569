//! The library's one error type. Each variant carries the path, key or tag set it is about, and
//! its message says what is wrong and what to do next.

use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tfload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model path does not exist.
    #[error("{path}: no such file or directory. Give the path of a SavedModel directory (the folder that holds saved_model.pb and variables/).")]
    NotFound {
        /// The path that was given.
        path: PathBuf,
    },

    /// The model path is a file, not a SavedModel directory.
    #[error("{path} is a file, not a SavedModel directory. {hint}")]
    NotADirectory {
        /// The path that was given.
        path: PathBuf,
        /// What the file looks like and what to do with it.
        hint: String,
    },

    /// The directory has no `saved_model.pb`.
    #[error("{dir} is not a SavedModel: it has no saved_model.pb. {hint}")]
    MissingSavedModelPb {
        /// The directory that was given.
        dir: PathBuf,
        /// What the directory holds instead, and what to do.
        hint: String,
    },

    /// The directory has no `variables/` checkpoint, which loading and listing variables need.
    #[error("{dir} has no variables/variables.index: the SavedModel's checkpoint is missing, so its variables cannot be read or restored. Copy the whole SavedModel directory (saved_model.pb together with variables/ and assets/), or export it again.")]
    MissingVariables {
        /// The SavedModel directory.
        dir: PathBuf,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// `saved_model.pb` is not a valid SavedModel protobuf (truncated, corrupt, or another format).
    #[error("{path} is truncated or corrupt: it does not decode as a SavedModel protobuf ({source}). Export or copy the model again.")]
    CorruptSavedModel {
        /// The `saved_model.pb` file.
        path: PathBuf,
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },

    /// A protobuf inside the SavedModel decoded but does not hold what the format requires.
    #[error("{path}: {problem}. The SavedModel is malformed; export it again.")]
    MalformedSavedModel {
        /// The file at fault.
        path: PathBuf,
        /// What is missing or inconsistent.
        problem: String,
    },

    /// The checkpoint index under `variables/` could not be read.
    #[error("{path}: cannot read the checkpoint index ({problem}). The variables/ folder may be truncated; copy or export the model again.")]
    CorruptCheckpointIndex {
        /// The `variables.index` file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },

    /// No MetaGraph carries the requested tag set.
    #[error("no MetaGraph with tag set [{wanted}] in {dir}; this model has: {available}. Choose one with --tag (several tags: --tag serve,gpu).")]
    TagSetNotFound {
        /// The SavedModel directory.
        dir: PathBuf,
        /// The requested tags, comma separated.
        wanted: String,
        /// The tag sets the model has.
        available: String,
    },

    /// No signature has the requested key.
    #[error("no signature `{key}` in {dir} (tag set [{tags}]); this model has: {available}. Run `tfload signatures {dir}` to see them.")]
    SignatureNotFound {
        /// The SavedModel directory.
        dir: PathBuf,
        /// The tag set searched.
        tags: String,
        /// The requested signature key.
        key: String,
        /// The signature keys the model has.
        available: String,
    },

    /// TensorFlow refused to load the SavedModel into a session.
    #[error("TensorFlow could not load {dir} with tag set [{tags}]: {message}")]
    Load {
        /// The SavedModel directory.
        dir: PathBuf,
        /// The tag set.
        tags: String,
        /// TensorFlow's status message.
        message: String,
    },

    /// A call into TensorFlow failed.
    #[error("TensorFlow error while {during}: {message}")]
    TensorFlow {
        /// What tfload was doing.
        during: String,
        /// TensorFlow's status message.
        message: String,
    },

    /// A NumPy array file could not be read or does not hold what is needed.
    #[error("{path}: {problem}")]
    Array {
        /// The `.npy` / `.npz` file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// A tensor has an element type tfload cannot convert.
    #[error("{context}: tensors of dtype {dtype} are not supported")]
    UnsupportedDType {
        /// The element type.
        dtype: crate::tensor::dtype::DType,
        /// Where it was met.
        context: String,
    },

    /// Inputs given to a signature do not match it (unknown, missing, wrong dtype or shape).
    #[error("signature `{signature}`: {problem}. Run `tfload signatures DIR -s {signature}` to see what it takes.")]
    InputMismatch {
        /// The signature key.
        signature: String,
        /// What does not match, naming the input key, the expected and the given dtype/shape.
        problem: String,
    },

    /// The model cannot be trained by tfload: no `train_step`, or no contract record.
    #[error("{dir} is not a trainable SavedModel: {problem}. tfload trains models exported to its train-step contract; make one with `.venv/bin/tfload-export --help` (docs/train-step-contract.md).")]
    NotTrainable {
        /// The SavedModel directory.
        dir: PathBuf,
        /// What is missing.
        problem: String,
    },

    /// The contract record and the model's signatures disagree, or the record is unreadable.
    #[error("{path} {problem}. Export the model again with `.venv/bin/tfload-export`.")]
    ContractMismatch {
        /// The record file.
        path: PathBuf,
        /// What disagrees.
        problem: String,
    },

    /// A training option is invalid (a mask pattern that matches nothing, a bad schedule, ...).
    #[error("{0}")]
    InvalidOption(String),

    /// Training data does not fit the model.
    #[error("{0}")]
    DataMismatch(String),

    /// The output directory cannot be used.
    #[error("{path}: {problem}")]
    Output {
        /// The directory.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },

    /// The loss became NaN or infinite.
    #[error("the loss became {value} at epoch {epoch}, step {step}; training stopped. {kept}. Lower the learning rate (--lr) or check the data for NaN/inf values.")]
    NonFiniteLoss {
        /// The loss value.
        value: f32,
        /// 1-based epoch.
        epoch: u64,
        /// Global step.
        step: u64,
        /// Which checkpoint was kept.
        kept: String,
    },

    /// An image file cannot be read as an image.
    #[error("{path}: {problem}. Remove or replace the file, or convert it to PNG or JPEG.")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// A folder cannot be used as an image data set (no class sub-folders, no images).
    #[error("{dir}: {problem}")]
    ImageFolder {
        /// The folder.
        dir: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },

    /// A model cannot be used the way asked (an image classifier without an image input, ...).
    #[error("{dir}, signature `{signature}`: {problem}")]
    UnsuitableModel {
        /// The SavedModel directory.
        dir: PathBuf,
        /// The signature key.
        signature: String,
        /// What does not fit, and what to do.
        problem: String,
    },

    /// A class-names (labels) file cannot be used.
    #[error("{path}: {problem}")]
    Labels {
        /// The labels file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// A file given as Keras weights is not a readable HDF5 file.
    #[error("{path} is not a readable HDF5 file ({problem}). Give Keras weights saved with `model.save_weights(\"w.weights.h5\")` (Keras 3) or `model.save(\"m.h5\")` / `model.save_weights(\"w.h5\")` (Keras 2, tf.keras).")]
    NotHdf5 {
        /// The file.
        path: PathBuf,
        /// What the HDF5 decoder said.
        problem: String,
    },

    /// An HDF5 file that does not hold Keras weights in a layout tfload reads.
    #[error("{path} is an HDF5 file but not Keras weights: {problem}. tfload reads Keras 3 `*.weights.h5` files (layers/<name>/vars/<i>) and Keras 2 / tf.keras `.h5` files (layer_names and weight_names attributes).")]
    NotKerasWeights {
        /// The file.
        path: PathBuf,
        /// What is missing.
        problem: String,
    },

    /// A weight inside a Keras HDF5 file cannot be read.
    #[error("{path}: cannot read `{object}`: {problem}. The file may be truncated; save the weights again.")]
    Hdf5Read {
        /// The file.
        path: PathBuf,
        /// The HDF5 object (dataset or attribute path).
        object: String,
        /// What went wrong.
        problem: String,
    },

    /// Weights of a Keras HDF5 file do not fit the variables of a SavedModel.
    #[error("{h5} does not fit {model}: {problem}. Pass --skip-mismatch to leave such layers as they are (a new head, say), or --dry-run to see the whole mapping.")]
    WeightMismatch {
        /// The HDF5 file.
        h5: PathBuf,
        /// The SavedModel directory.
        model: PathBuf,
        /// Which layer and weight, with expected and found count, shape or dtype.
        problem: String,
    },

    /// No layer of a Keras HDF5 file has a counterpart among a SavedModel's variables.
    #[error("no layer of {h5} matches a layer of {model}: the file has [{h5_layers}], the model [{model_layers}]. Weights are matched by layer name, so the model must come from a Keras model with the same layer names.")]
    NoMatchingLayers {
        /// The HDF5 file.
        h5: PathBuf,
        /// The SavedModel directory.
        model: PathBuf,
        /// Layers of the file that hold weights.
        h5_layers: String,
        /// Layers of the model that hold variables.
        model_layers: String,
    },

    /// A checkpoint entry cannot take the value given for it.
    #[error("checkpoint entry `{key}`: {problem}")]
    CheckpointReplace {
        /// The checkpoint key.
        key: String,
        /// What does not fit.
        problem: String,
    },

    /// A TFRecord file that cannot be read: truncated, corrupt, or not a TFRecord file.
    #[error("{path}: {problem}")]
    TfRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong, where (byte offset), and what to do.
        problem: String,
    },

    /// A record of a TFRecord data set does not hold what the feature mapping asks for.
    #[error("{path}, record {record} (offset {offset}): {problem}")]
    Example {
        /// The TFRecord file.
        path: PathBuf,
        /// The record's position in the file (0-based).
        record: usize,
        /// The byte offset of the record (in the decompressed stream for GZIP/ZLIB files).
        offset: u64,
        /// What is missing or of the wrong type, and what the record has.
        problem: String,
    },

    /// The graph holds more variable handles than the model has variables (the two-handle trap).
    #[error("{path} has {handles} variable handles for {variables} variables ({examples}, ...): some variables have two resource handles, so training would update one copy while saving writes the other and the trained model would keep its old weights. This happens when a Keras model is kept as a tf.Module attribute or exported with keras.export.ExportArchive; export it with `.venv/bin/tfload-export`, which tracks one handle per variable.")]
    DuplicateVariableHandles {
        /// The `saved_model.pb`.
        path: PathBuf,
        /// Variable handles in the graph.
        handles: usize,
        /// Variables in the object graph.
        variables: usize,
        /// Some handle names.
        examples: String,
    },

    // --- Training runs that stop on an error (src/train/fit.rs) ---
    /// A training run failed after it had taken a checkpoint: the error, and where the run can
    /// be continued from.
    #[error("{error}\n{}The last good checkpoint is kept in {kept}; once the cause is fixed, run the same command with --resume to continue from it.", disk_full_hint(error))]
    RunStopped {
        /// What went wrong (shown in this error's message, so not its `source()`).
        error: Box<Error>,
        /// The newest complete checkpoint.
        kept: PathBuf,
    },

    /// The disk filled up while TensorFlow wrote a checkpoint.
    #[error("no space left on the device while {during}. Free some space there (each checkpoint needs about the model's size; --keep-checkpoints lowers how many are kept) or choose an --out on another disk")]
    DiskFull {
        /// What tfload was writing.
        during: String,
    },

    // --- Contract record and learning-rate checks, HDF5 integrity (helper `contract`, issue 14) ---
    /// A field of the contract record disagrees with the model's signatures or checkpoint index,
    /// or holds a value the contract does not allow.
    #[error("{path}: record field `{field}` is {found}, expected {expected}. The record does not describe this model; export it again with `.venv/bin/tfload-export`, or correct the record (docs/train-step-contract.md).")]
    ContractField {
        /// The record file.
        path: PathBuf,
        /// The field, as a JSON path (`mask_variables[2].shape`).
        field: String,
        /// The value the record holds.
        found: String,
        /// What the model (signature or checkpoint) or the contract requires.
        expected: String,
    },

    /// A learning rate (given, recorded or scheduled) that is not a finite number above 0.
    #[error("{origin} is {value}, expected {expected}. Give a rate such as --lr 0.01.")]
    InvalidLearningRate {
        /// Where the value comes from (`--lr`, `--min-lr`, the record's `learning_rate.default`).
        origin: String,
        /// The value found.
        value: String,
        /// What is allowed.
        expected: String,
    },

    /// An HDF5 file whose own stored lengths or checksums say it is truncated or corrupt.
    #[error("{path} is truncated or corrupt: {problem}. h5py refuses such a file too; save the weights again.")]
    CorruptHdf5 {
        /// The file.
        path: PathBuf,
        /// Which stored length or checksum disagrees, with the stored and the actual value.
        problem: String,
    },

    /// Layers of the model that a Keras HDF5 file holds no weights for.
    #[error("{h5} holds no weights for {count} layer(s) of {model}: {layers}. The file may be truncated or come from another model; pass --skip-mismatch to keep these layers as the model has them.")]
    MissingLayers {
        /// The HDF5 file.
        h5: PathBuf,
        /// The SavedModel directory.
        model: PathBuf,
        /// How many layers are missing.
        count: usize,
        /// Their names.
        layers: String,
    },

    // --- hostile array files (.npy / .npz) ---
    /// A member of a `.npz` archive is corrupt or declares more than tfload reads: a CRC-32 or
    /// stored-size mismatch, a header beyond the limits, data beyond the memory limit.
    #[error("{path}, member {member}: {problem}")]
    NpzMember {
        /// The `.npz` file.
        path: PathBuf,
        /// The member's file name in the archive (`x.npy`).
        member: String,
        /// What is wrong, with the limit passed where one was.
        problem: String,
    },

    // --- Hostile formats (checkpoint data, TFRecords, images; issue 14 item 7) ---
    /// A tensor in a checkpoint's data shard does not match what the index says of it.
    #[error("{path}: entry `{key}` {problem}. The checkpoint data is corrupt; copy or export the model again.")]
    CorruptCheckpointData {
        /// The data shard.
        path: PathBuf,
        /// The checkpoint key of the tensor.
        key: String,
        /// What is wrong (checksum, size).
        problem: String,
    },

    // --- data sources and trainable models (issue 15) ---
    /// The data path does not exist (and is not a glob).
    #[error("{path}: no such file or directory. Give an image folder (one sub-folder per class) or a .npz file with x and y arrays")]
    DataNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// TFRecord data was given without naming the input and label features.
    #[error("{path} is TFRecord data; say which feature is the model input and which the label with --feature KEY --label KEY. Its first record has: {features}")]
    TfRecordFeaturesUnnamed {
        /// The data path.
        path: PathBuf,
        /// The features of its first record, comma-separated.
        features: String,
    },
    /// `--feature INPUT=KEY` names an input the model does not have.
    #[error("--feature {given}: the model has no input `{name}`; its input is `{input}`")]
    NoSuchModelInput {
        /// The mapping as given.
        given: String,
        /// The input it names.
        name: String,
        /// The model's input.
        input: String,
    },
    /// Class folders of an image folder hold no images.
    #[error("{data}: the class folder(s) {classes} hold no images; add images or remove the folder")]
    EmptyClassFolders {
        /// The image folder, described.
        data: String,
        /// The empty classes, comma-separated.
        classes: String,
    },
    /// Image folders were given for a model whose input is not a batch of images.
    #[error("the model's input `{input}` is {shape}, {why}; train it from a .npz instead")]
    NotAnImageModel {
        /// The input key.
        input: String,
        /// Its shape.
        shape: String,
        /// Why it cannot take images.
        why: &'static str,
    },
    /// The input model's files changed between the moment a run read them and its copy of them.
    #[error("{dir} changed while the training run was starting (its saved_model.pb or tfload record differs from what was read). Run again once nothing writes to it")]
    InputChanged {
        /// The input model.
        dir: PathBuf,
    },

    // --- libtensorflow at start-up (issue 19, dist19) ---
    /// The libtensorflow this process loaded is another TensorFlow version than tfload is pinned to.
    #[error(
        "libtensorflow is TensorFlow {found}, but this tfload is pinned to {pinned} (its protos and Python exporter \
         match that version){loaded}. Rebuild tfload against the pinned library (`bash scripts/tflib.sh FOLDER`, \
         then TFLOAD_TFLIB_DIR and PKG_CONFIG_PATH = FOLDER), or remove the other library from LD_LIBRARY_PATH."
    )]
    LibtensorflowVersion {
        /// What `TF_Version()` says.
        found: String,
        /// What scripts/requirements.txt pinned at build time.
        pinned: String,
        /// ", loaded from PATH" when /proc/self/maps names the library file, else empty.
        loaded: String,
    },

    // --- export-serving (issue 19): refusals that write nothing ---
    /// The model has no `serving_default` signature, which a serving export is built around.
    #[error("{dir} has no `serving_default` signature, which TF Serving calls when a request names none; this model has: {available}. Export it with a serving signature (tfload-export writes one), then run export-serving again.")]
    NoServingDefault {
        /// The SavedModel directory.
        dir: PathBuf,
        /// The signature keys the model has.
        available: String,
    },

    /// A training signature was named for a serving export, which drops the optimizer state it
    /// needs.
    #[error("--signature {key}: `{key}` is one of tfload's training signatures; it needs the optimizer state and step counters that a serving export leaves out. Name only signatures that serve (this model has: {available}).")]
    TrainingSignatureNotServable {
        /// The signature named.
        key: String,
        /// The signature keys the model has.
        available: String,
    },

    /// The TF Serving version directory exists already.
    #[error("{path} already exists: a TF Serving version is never overwritten, because a server may be serving it. Leave out --version to write the next free one ({next}), or give another number.")]
    ServingVersionExists {
        /// The version directory.
        path: PathBuf,
        /// The next free version number under the same base.
        next: u64,
    },

    /// The SavedModel's graphs do not fit together the way a serving export needs.
    #[error("{dir}: {problem}. tfload cannot write a serving form of this model; export it again with tfload-export.")]
    ServingExport {
        /// The SavedModel directory.
        dir: PathBuf,
        /// What does not fit.
        problem: String,
    },

    /// A `--warmup-input KEY=FILE` cannot be turned into a warm-up request.
    #[error("--warmup-input {spec}: {problem}")]
    WarmupInput {
        /// The argument as given.
        spec: String,
        /// What is wrong, and the signature's inputs where that helps.
        problem: String,
    },

    // Byte-string inputs (issue 17 item 3).
    /// A `--input-examples KEY=[...]` cannot be built into tf.Examples.
    #[error("--input-examples {key}: {problem}")]
    InputExamples {
        /// The input key as given.
        key: String,
        /// What is wrong (the example and feature named), and what to write instead.
        problem: String,
    },

    // Data augmentation and missing weights (issue 16, items 4 and augmentation).
    /// `--augment` names something tfload cannot do, or data it cannot apply to.
    #[error("--augment: {problem}")]
    Augmentation {
        /// What is wrong, and what to give instead.
        problem: String,
    },

    // --- Labels, class and sample weights (labels16, issue 16 items 2 and class weights) ---
    /// `--label-mode` asks for labels the model does not take.
    #[error("--label-mode {given} does not fit this model: its loss takes {wanted_form} (label mode {wanted}). Leave --label-mode out (tfload then gives the model what it takes) or pass --label-mode {wanted}")]
    LabelModeMismatch {
        /// The mode given.
        given: &'static str,
        /// The mode the model's loss takes.
        wanted: &'static str,
        /// Dtype and shape the model takes.
        wanted_form: String,
    },
    /// The data's labels cannot be turned into the labels the model takes.
    #[error("labels {given} do not fit the model, which takes {wanted}: {why}")]
    LabelsUnfit {
        /// The labels' dtype and shape.
        given: String,
        /// What the model takes.
        wanted: String,
        /// Why they do not convert, and what to do.
        why: String,
    },
    /// A `--class-weight` that cannot be applied.
    #[error("--class-weight {given}: {problem}")]
    ClassWeight {
        /// The text or class given.
        given: String,
        /// What is wrong.
        problem: String,
    },
    /// `--sample-weight` on data that has no weight column tfload reads.
    #[error("{data}: --sample-weight {key} reads a weight array of .npz data, and this data is not a .npz file. Save the weights as an array of the .npz (np.savez(path, x=..., y=..., {key}=...)) or use --class-weight")]
    SampleWeightsUnavailable {
        /// The data path.
        data: PathBuf,
        /// The weight key given.
        key: String,
    },
    /// Weights were asked for, and the model's steps take none.
    #[error("{signature} of this model takes no sample_weight input, so --class-weight / --sample-weight cannot apply. Export the model again with `.venv/bin/tfload-export ... --sample-weights` (train-step contract version 2)")]
    WeightsNotTaken {
        /// The step signature.
        signature: String,
    },

    // Multi-worker training (issue 20: src/train/distributed, src/session/server.rs).
    /// A TensorFlow gRPC server could not be created or started.
    #[error("{what}: {message}. Check that the address is free on this machine and that the cluster lists it as this task's")]
    Server {
        /// What was being done, naming the task and its address.
        what: String,
        /// TensorFlow's message.
        message: String,
    },
    /// The cluster configuration (`TF_CONFIG` or `--cluster`/`--task-index`) is unusable.
    #[error("the cluster configuration ({origin}) {problem}")]
    ClusterConfig {
        /// Where it came from: `TF_CONFIG` or `--cluster`.
        origin: String,
        /// What is wrong and what to write instead.
        problem: String,
    },
    /// A multi-worker run on a model exported without `train_step_allreduce`.
    #[error("{dir} has no `train_step_allreduce` signature, which multi-worker training calls (it was exported by an older tfload-export). Export it again with .venv/bin/tfload-export (any version that writes the record's `allreduce` entry); it still trains on one process as it is")]
    NoAllreduceStep {
        /// The model directory.
        dir: PathBuf,
    },
    /// A collective step failed on this task because of another task.
    #[error("task {task}: {what}. TensorFlow says: {message}. {advice}")]
    Collective {
        /// This task (`worker:1 at host:port`).
        task: String,
        /// What happened, naming the peer where known.
        what: String,
        /// TensorFlow's message (shortened, on one line).
        message: String,
        /// What to do.
        advice: String,
    },
    /// The tasks did not all come up, or did not agree, within the start-up timeout.
    #[error("task {task}: the other tasks of the cluster did not all join within {seconds} s ({waiting}). Start the same command on every task of the cluster ({tasks}); raise --startup-timeout if they start slowly")]
    StartupTimeout {
        /// This task.
        task: String,
        /// The timeout.
        seconds: u64,
        /// What was being waited for.
        waiting: String,
        /// Every task and its address.
        tasks: String,
    },
    /// The tasks run with different settings or data: they would not call the step equally often.
    #[error("task {task}: the tasks of the cluster disagree on {field} (this task: {mine}; across the cluster: from {lowest} to {highest}). Every task must run the same command on the same data (and --resume on all tasks or none)")]
    ClusterMismatch {
        /// This task.
        task: String,
        /// The setting that differs.
        field: String,
        /// This task's value.
        mine: String,
        /// The smallest value in the cluster.
        lowest: String,
        /// The largest value in the cluster.
        highest: String,
    },
    /// A task started by `--local-workers` failed.
    #[error("local worker {index} {problem}")]
    LocalWorker {
        /// The task index.
        index: usize,
        /// What happened (its exit status).
        problem: String,
    },

    // Frozen-base feature cache (issue 18 item 1).
    /// The features of the frozen base could not be computed or cached.
    #[error(
        "the feature cache failed: {problem}. Run again with --no-feature-cache to train through the full train_step."
    )]
    FeatureCache {
        /// What went wrong.
        problem: String,
    },

    // --- load-time graph cut (issue 18) ---
    /// The model has the signature, but its session was loaded for others only.
    #[error("signature `{key}` of {dir} was not loaded: this session was loaded for {loaded} only (the graph is cut to them). Load the model for `{key}` too (LoadScope::All, or a scope that lists it)")]
    SignatureNotLoaded {
        /// The SavedModel directory.
        dir: PathBuf,
        /// The requested signature key.
        key: String,
        /// The signatures the session was loaded for.
        loaded: String,
    },
}

/// "The disk is full. " when `error` is about a full disk, else nothing.
fn disk_full_hint(error: &Error) -> &'static str {
    let full = match error {
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
        Error::DiskFull { .. } => true,
        _ => false,
    };
    if full {
        "The disk is full: free some space there, or choose an --out on another disk. "
    } else {
        ""
    }
}

impl Error {
    /// A failed TensorFlow call: a full disk named as such, TensorFlow's allocator hint (which
    /// is about memory, never about files) left out.
    pub fn from_tensorflow(during: String, status: &tensorflow::Status) -> Error {
        let message = status.to_string();
        if message.contains("No space left on device") {
            return Error::DiskFull { during };
        }
        let message = match message.find("\nHint: If you want to see a list of allocated tensors") {
            Some(at) => message[..at].trim_end().to_string(),
            None => message,
        };
        Error::TensorFlow { during, message }
    }
}
