//! File formats tfload reads and writes without a TensorFlow session: NumPy arrays, TFRecord files,
//! images (JPEG decoded as TensorFlow does), the checkpoint index and its writer, Keras HDF5 weights,
//! TensorBoard event files.

pub mod checkpoint_index;
pub mod checkpoint_writer;
pub(crate) mod crc;
pub mod events;
pub mod example;
pub mod images;
pub mod jpeg;
pub mod keras_h5;
pub mod linked_bundle;
pub mod npy;
pub mod output_draft;
pub mod table_writer;
pub mod tfrecord;
