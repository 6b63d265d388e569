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
    /// How the folder's classes were matched to a model's by name, when the orders differ.
    mapping: Option<String>,
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
        Ok(ImageFolderDataset { root, spec, class_names, files, labels, mapping: None })
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

    /// Labels the folder's classes by the model's class names (`model_classes`, in the model's
    /// output order) instead of by the folders' sorted order: a folder `trucks` gets the index
    /// of `trucks` in the model's head, wherever it sorts. Fails, naming both lists, when a
    /// folder is not one of the model's classes. Folders the model has but the data lacks are
    /// allowed (those classes get no examples).
    pub fn matched_to(mut self, model_classes: &[String]) -> Result<ImageFolderDataset> {
        if self.class_names == model_classes {
            return Ok(self);
        }
        let unknown: Vec<&str> =
            self.class_names.iter().filter(|c| !model_classes.contains(c)).map(String::as_str).collect();
        if !unknown.is_empty() {
            return Err(folder_error(
                &self.root,
                format!(
                    "has class folder(s) {} that are not among the model's classes ({}). Rename the folders to the model's class names, or export the model with --class-names naming these classes",
                    unknown.join(", "),
                    model_classes.join(", ")
                ),
            ));
        }
        let index_of = |class: &String| model_classes.iter().position(|m| m == class).expect("checked above") as i64;
        let new_labels: Vec<i64> = self.class_names.iter().map(index_of).collect();
        for label in &mut self.labels {
            *label = new_labels[*label as usize];
        }
        let pairs: Vec<String> =
            self.class_names.iter().zip(&new_labels).map(|(class, index)| format!("{class} -> {index}")).collect();
        self.mapping = Some(format!(
            "{}: class folders matched to the model's classes by name ({}); the folders sort as {}, the model's order is {}",
            self.root.display(),
            pairs.join(", "),
            self.class_names.join(", "),
            model_classes.join(", ")
        ));
        self.class_names = model_classes.to_vec();
        Ok(self)
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

    fn notes(&self) -> Vec<String> {
        self.mapping.iter().cloned().collect()
    }

    fn describe(&self) -> String {
        format!("{} ({} images in {} classes)", self.root.display(), self.len(), self.class_names.len())
    }

    fn gather(&self, indices: &[usize]) -> Result<Batch> {
        let paths: Vec<PathBuf> = indices.iter().map(|&i| self.files[i].clone()).collect();
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i]).collect();
        Ok(Batch::new(
            TensorData::Float32(self.spec.load_batch(&paths)?),
            TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[labels.len()]), labels).expect("1-D")),
            indices.to_vec(),
        ))
    }

    fn all_labels(&self) -> Option<TensorData> {
        Some(TensorData::Int64(ArrayD::from_shape_vec(IxDyn(&[self.labels.len()]), self.labels.clone()).expect("1-D")))
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

    #[test]
    fn classes_matched_to_the_model_by_name_take_the_model_s_indices() {
        let spec = ImageSpec { height: 8, width: 8, color_mode: ColorMode::Grayscale };
        let sorted = ImageFolderDataset::open(digits(), spec).unwrap();
        let model: Vec<String> = ["9", "8", "7", "6", "5"].map(String::from).to_vec();
        let matched = sorted.clone().matched_to(&model).unwrap();
        assert_eq!(matched.class_names().unwrap(), model);
        for (file, (&before, &after)) in sorted.files().iter().zip(sorted.labels().iter().zip(matched.labels())) {
            assert_eq!(after, 4 - before, "{}", file.display());
        }
        let note = matched.notes().join("");
        assert!(note.contains("5 -> 4, 6 -> 3, 7 -> 2, 8 -> 1, 9 -> 0"), "{note}");
        // The same order: nothing changes and nothing is said.
        let same = sorted.clone().matched_to(&sorted.class_names().unwrap()).unwrap();
        assert_eq!(same.labels(), sorted.labels());
        assert!(same.notes().is_empty());
        // A model with more classes than the folder: allowed, by name.
        let more: Vec<String> = ["4", "5", "6", "7", "8", "9"].map(String::from).to_vec();
        let matched = sorted.clone().matched_to(&more).unwrap();
        assert_eq!(matched.labels()[0], 1);
    }

    #[test]
    fn a_class_folder_the_model_lacks_is_refused_with_both_lists() {
        let spec = ImageSpec { height: 8, width: 8, color_mode: ColorMode::Grayscale };
        let model: Vec<String> = ["cars", "trucks", "motorcycles"].map(String::from).to_vec();
        let error = ImageFolderDataset::open(digits(), spec).unwrap().matched_to(&model).unwrap_err().to_string();
        assert!(
            error.contains(
                "class folder(s) 5, 6, 7, 8, 9 that are not among the model's classes (cars, trucks, motorcycles)"
            ),
            "{error}"
        );
    }
}
