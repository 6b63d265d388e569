//! A folder of images with one sub-folder per class, read the way Keras's
//! `image_dataset_from_directory(..., shuffle=False)` reads it: classes sorted by folder name,
//! files in the same order, labels the class index, images resized to one size. Images are
//! decoded only when a batch asks for them, in parallel.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::formats::images::{list_images, visible_entries, ImageSpec, IMAGE_EXTENSIONS};
use crate::tensor::TensorData;

/// Labelled images on disk: `root/<class>/**/<image>`.
#[derive(Debug, Clone)]
pub struct ImageFolderDataset {
    root: PathBuf,
    spec: ImageSpec,
    class_names: Vec<String>,
    files: Vec<PathBuf>,
    labels: Vec<i64>,
}

impl ImageFolderDataset {
    /// Indexes `root`: every non-hidden sub-folder is a class, every image file under it an
    /// example. Nothing is decoded yet.
    pub fn open(root: impl AsRef<Path>, spec: ImageSpec) -> Result<ImageFolderDataset> {
        let root = root.as_ref().to_path_buf();
        let class_names = class_folders(&root)?;
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        for (label, class) in class_names.iter().enumerate() {
            let images = list_images(&root.join(class))?;
            labels.extend(std::iter::repeat_n(label as i64, images.len()));
            files.extend(images);
        }
        if files.is_empty() {
            return Err(folder_error(
                &root,
                format!(
                    "no image files ({}) in its class folders {}",
                    IMAGE_EXTENSIONS.join(", "),
                    class_names.join(", ")
                ),
            ));
        }
        Ok(ImageFolderDataset { root, spec, class_names, files, labels })
    }

    /// The image files, in example order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The label (class index) of each file.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The size and channels images are read at.
    pub fn spec(&self) -> ImageSpec {
        self.spec
    }
}

fn folder_error(dir: &Path, problem: String) -> Error {
    Error::ImageFolder { dir: dir.to_path_buf(), problem }
}

/// The non-hidden sub-folders of `root`, sorted: the class names.
fn class_folders(root: &Path) -> Result<Vec<String>> {
    let mut classes: Vec<String> = visible_entries(root)?
        .into_iter()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(folder_error(
            root,
            "has no class sub-folders; an image data set holds one folder per class (cats/, dogs/) with the images inside".to_string(),
        ));
    }
    Ok(classes)
}

impl Dataset for ImageFolderDataset {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn example_shape(&self) -> Vec<usize> {
        self.spec.shape()
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(self.class_names.clone())
    }

    fn label_classes(&self) -> Option<usize> {
        Some(self.class_names.len())
    }

    fn describe(&self) -> String {
        format!("{} ({} images in {} classes)", self.root.display(), self.len(), self.class_names.len())
    }

    fn gather(&self, indices: &[usize]) -> Result<Batch> {
        let paths: Vec<PathBuf> = indices.iter().map(|&i| self.files[i].clone()).collect();
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i]).collect();
        Ok(Batch {
            inputs: TensorData::Float32(self.spec.load_batch(&paths)?),
            labels: TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[labels.len()]), labels).expect("1-D")),
            indices: indices.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::images::ColorMode;

    fn digits() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("saved_models/data/digits_5_9_images")
    }

    #[test]
    fn classes_are_sorted_folders_and_labels_follow_them() {
        let spec = ImageSpec { height: 8, width: 8, color_mode: ColorMode::Grayscale };
        let dataset = ImageFolderDataset::open(digits(), spec).unwrap();
        assert_eq!(dataset.class_names().unwrap(), vec!["5", "6", "7", "8", "9"]);
        let first_of_6 = dataset.labels().iter().position(|&l| l == 1).unwrap();
        assert!(dataset.files()[first_of_6].starts_with(digits().join("6")));
        let batch = dataset.gather(&[0, first_of_6]).unwrap();
        assert_eq!(batch.inputs.shape(), &[2, 8, 8, 1]);
        assert_eq!(batch.labels, TensorData::Int64(ndarray::arr1(&[0i64, 1]).into_dyn()));
    }

    #[test]
    fn a_folder_without_classes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec { height: 8, width: 8, color_mode: ColorMode::Rgb };
        let error = ImageFolderDataset::open(dir.path(), spec).unwrap_err().to_string();
        assert!(error.contains("no class sub-folders"), "{error}");
        std::fs::create_dir(dir.path().join("cats")).unwrap();
        let error = ImageFolderDataset::open(dir.path(), spec).unwrap_err().to_string();
        assert!(error.contains("no image files"), "{error}");
    }
}
