//! Classification metrics: a confusion matrix counted from (label, predicted class) pairs, and
//! the per-class precision, recall and F1 read off it (scikit-learn's definitions, with 0 where
//! a denominator is 0).

use serde::Serialize;

/// Named scalar results of a step or a pass (`loss`, `accuracy`), sorted by name.
pub type Metrics = std::collections::BTreeMap<String, f64>;

/// Running means of metrics weighted by batch size.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightedMean {
    sums: Metrics,
    count: usize,
}

impl WeightedMean {
    /// Adds one batch's metrics, computed over `examples` examples.
    pub fn add(&mut self, metrics: &Metrics, examples: usize) {
        for (key, value) in metrics {
            *self.sums.entry(key.clone()).or_default() += value * examples as f64;
        }
        self.count += examples;
    }

    /// The means so far.
    pub fn mean(&self) -> Metrics {
        let count = self.count.max(1) as f64;
        self.sums.iter().map(|(k, v)| (k.clone(), v / count)).collect()
    }

    /// Examples seen.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// Counts of (true class, predicted class) pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfusionMatrix {
    /// `counts[label][predicted]`.
    counts: Vec<Vec<u64>>,
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Of the examples predicted as this class, the fraction that are.
    pub precision: f64,
    /// Of the examples of this class, the fraction predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Examples of this class.
    pub support: u64,
}

impl ConfusionMatrix {
    /// An empty matrix over `classes` classes.
    pub fn new(classes: usize) -> ConfusionMatrix {
        ConfusionMatrix { counts: vec![vec![0; classes]; classes] }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.counts.len()
    }

    /// Counts one example. Returns `false` (and counts nothing) when a class is out of range.
    pub fn add(&mut self, label: usize, predicted: usize) -> bool {
        let classes = self.classes();
        if label >= classes || predicted >= classes {
            return false;
        }
        self.counts[label][predicted] += 1;
        true
    }

    /// `counts[label][predicted]`, rows the true classes.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// Examples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction predicted right (0 when empty).
    pub fn accuracy(&self) -> f64 {
        let right: u64 = (0..self.classes()).map(|c| self.counts[c][c]).sum();
        ratio(right, self.total())
    }

    /// Precision, recall, F1 and support of each class, in class order.
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        (0..self.classes())
            .map(|class| {
                let right = self.counts[class][class];
                let support: u64 = self.counts[class].iter().sum();
                let predicted: u64 = self.counts.iter().map(|row| row[class]).sum();
                let (precision, recall) = (ratio(right, predicted), ratio(right, support));
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassMetrics { precision, recall, f1, support }
            })
            .collect()
    }

    /// The unweighted mean of each class's precision, recall and F1 (`macro avg`), support the
    /// total.
    pub fn macro_average(&self) -> ClassMetrics {
        let per_class = self.per_class();
        let n = per_class.len().max(1) as f64;
        let mean = |f: fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / n;
        ClassMetrics {
            precision: mean(|m| m.precision),
            recall: mean(|m| m.recall),
            f1: mean(|m| m.f1),
            support: self.total(),
        }
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(pairs: &[(usize, usize)], classes: usize) -> ConfusionMatrix {
        let mut matrix = ConfusionMatrix::new(classes);
        for &(label, predicted) in pairs {
            assert!(matrix.add(label, predicted));
        }
        matrix
    }

    #[test]
    fn per_class_metrics_match_scikit_learn() {
        // sklearn.metrics.classification_report([0,0,1,1,2], [0,1,1,1,0]):
        // class 0: P 0.5 R 0.5; class 1: P 2/3 R 1; class 2: P 0 R 0.
        let m = matrix(&[(0, 0), (0, 1), (1, 1), (1, 1), (2, 0)], 3);
        let per_class = m.per_class();
        assert_eq!((per_class[0].precision, per_class[0].recall, per_class[0].f1), (0.5, 0.5, 0.5));
        assert!((per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(per_class[1].recall, 1.0);
        assert!((per_class[1].f1 - 0.8).abs() < 1e-12);
        assert_eq!((per_class[2].precision, per_class[2].f1, per_class[2].support), (0.0, 0.0, 1));
        assert_eq!(m.accuracy(), 0.6);
        assert!((m.macro_average().f1 - 1.3 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn out_of_range_classes_are_refused() {
        let mut m = ConfusionMatrix::new(2);
        assert!(!m.add(2, 0));
        assert!(!m.add(0, 5));
        assert_eq!(m.total(), 0);
        assert_eq!(m.accuracy(), 0.0);
    }
}
