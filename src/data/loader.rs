//! The batch loader: a reproducible order of examples per epoch (a pure function of seed and
//! epoch, so a resumed run sees the same batches as an uninterrupted one), cut into batches that
//! a background thread gathers ahead of the training loop through a bounded queue (or, for data
//! already in memory, the training loop gathers itself, several batches at a time, into arrays it
//! reuses: a copy is cheaper than the hand-off).

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Augmentation, Batch, Dataset};
use crate::error::{Error, Result};

/// Batches of an in-memory data set gathered and mapped in one go, at most (in bytes of the
/// batches; always at least one batch).
pub const INLINE_AHEAD_BYTES: usize = 8 << 20;

/// The order of `len` examples in `epoch`: `0..len` without shuffling, else a permutation drawn
/// from `seed` and `epoch` alone.
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        // Mix the epoch in so that consecutive epochs get unrelated permutations.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
    }
    order
}

/// How batches are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Examples per batch.
    pub batch_size: usize,
    /// Shuffle the examples each epoch.
    pub shuffle: bool,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Leave out the last batch when it is smaller than `batch_size`.
    pub drop_remainder: bool,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

impl Default for LoaderOptions {
    fn default() -> LoaderOptions {
        LoaderOptions { batch_size: 32, shuffle: true, seed: 0, drop_remainder: false, prefetch: 2 }
    }
}

/// Hands out the batches of a data set, epoch by epoch.
#[derive(Clone)]
pub struct BatchLoader {
    dataset: Arc<dyn Dataset>,
    options: LoaderOptions,
    /// Applied to every batch after it is gathered, from streams of `options.seed`.
    augmentation: Option<Arc<Augmentation>>,
    /// `(rank, tasks)` of a multi-worker run: each batch is this task's share of a global batch.
    shard: Option<(usize, usize)>,
}

impl BatchLoader {
    /// A loader over `dataset`. A batch size of 0 is taken as 1.
    pub fn new(dataset: Arc<dyn Dataset>, mut options: LoaderOptions) -> BatchLoader {
        options.batch_size = options.batch_size.max(1);
        BatchLoader { dataset, options, augmentation: None, shard: None }
    }

    /// The same loader, augmenting every batch it hands out: each example from its own random
    /// stream of (seed, epoch, example index), so batches are the same on every run, resumed or
    /// not, whichever thread makes them. Fails when the data's examples are not images
    /// `[H, W, C]` the transforms fit.
    pub fn with_augmentation(mut self, augmentation: Augmentation) -> Result<BatchLoader> {
        augmentation.check_example_shape(&self.dataset.example_shape())?;
        self.augmentation = Some(Arc::new(augmentation));
        Ok(self)
    }

    /// Whether batches are augmented (a cache of computed features must then stay unused: the
    /// inputs differ every epoch).
    pub fn augmentation_enabled(&self) -> bool {
        self.augmentation.is_some()
    }

    /// The augmentation, where there is one.
    pub fn augmentation(&self) -> Option<&Augmentation> {
        self.augmentation.as_deref()
    }

    /// This loader for the task of `rank` among `tasks` of a multi-worker run: the batch size is
    /// the global batch's, split into `tasks` equal contiguous shards (shard `rank` is this
    /// task's), in the same seeded order as one process; a last global batch smaller than the
    /// batch size is dropped on every task (equal shards keep the all-reduced mean exact).
    /// Refused when the batch size does not divide by `tasks`.
    pub fn sharded(mut self, rank: usize, tasks: usize) -> Result<BatchLoader> {
        if tasks == 0 || rank >= tasks || !self.options.batch_size.is_multiple_of(tasks) {
            return Err(Error::InvalidOption(format!(
                "--batch-size {} is the global batch of a multi-worker run and must divide into {tasks} equal shards (one per task); give a multiple of {tasks}",
                self.options.batch_size
            )));
        }
        self.options.drop_remainder = true;
        self.shard = Some((rank, tasks));
        Ok(self)
    }

    /// `(rank, tasks)` when this loader gives one task's shards of the global batches.
    pub fn shard(&self) -> Option<(usize, usize)> {
        self.shard
    }

    /// The data set.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// The options.
    pub fn options(&self) -> &LoaderOptions {
        &self.options
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (len, size) = (self.dataset.len(), self.options.batch_size);
        if self.options.drop_remainder {
            len / size
        } else {
            len.div_ceil(size)
        }
    }

    /// The example indices of each batch of `epoch`.
    pub fn batch_indices(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = epoch_order(self.dataset.len(), self.options.seed, epoch, self.options.shuffle);
        let batches = order.chunks(self.options.batch_size).take(self.batches_per_epoch());
        match self.shard {
            None => batches.map(<[usize]>::to_vec).collect(),
            Some((rank, tasks)) => {
                let per = self.options.batch_size / tasks;
                batches.map(|global| global[rank * per..(rank + 1) * per].to_vec()).collect()
            }
        }
    }

    /// The batches of `epoch` from batch `skip` on, gathered on a background thread that works
    /// up to `prefetch` batches ahead (in-memory data sets: on the caller's thread, see
    /// [`BatchLoader::epoch_map`]). Dropping the iterator stops the thread.
    pub fn epoch(&self, epoch: u64, skip: usize) -> EpochBatches<Batch> {
        let dataset = self.dataset.clone();
        let augment = self.augmenter(epoch);
        self.batches(epoch, skip, move |indices: &[usize]| {
            let mut batch = dataset.gather(indices)?;
            augment(&mut batch)?;
            Ok((batch.nbytes(), batch))
        })
    }

    /// The batches of `epoch` from batch `skip` on, each handed to `map` as it is gathered (a
    /// trainer turns batches into ready-to-feed tensors there), yielding what `map` returns.
    ///
    /// Data sets that decode or read ([`Dataset::is_in_memory`] false) are gathered on a
    /// background thread up to `prefetch` batches ahead; in-memory ones are gathered when the
    /// iterator is advanced, on the caller's thread, into the arrays of the batch before
    /// ([`Dataset::gather_into`]): nothing is allocated per batch, and nothing is handed over
    /// between threads. They are gathered and mapped several at a time, up to
    /// [`INLINE_AHEAD_BYTES`] of batches, in one pause of the consumer rather than one per batch:
    /// between two training steps TensorFlow's idle threads spin on the cores, so a pause of a few
    /// microseconds costs a multiple of that.
    pub fn epoch_map<T, F>(&self, epoch: u64, skip: usize, map: F) -> EpochBatches<T>
    where
        T: Send + 'static,
        F: Fn(&Batch) -> Result<T> + Send + 'static,
    {
        let dataset = self.dataset.clone();
        let mut last: Option<Batch> = None;
        let augment = self.augmenter(epoch);
        self.batches(epoch, skip, move |indices: &[usize]| {
            let batch = match &mut last {
                Some(batch) => {
                    dataset.gather_into(indices, batch)?;
                    batch
                }
                None => last.insert(dataset.gather(indices)?),
            };
            augment(batch)?;
            Ok((batch.nbytes(), map(batch)?))
        })
    }

    /// What is done to each gathered batch of `epoch`: its augmentation, or nothing.
    fn augmenter(&self, epoch: u64) -> impl Fn(&mut Batch) -> Result<()> + Send + 'static {
        let (augmentation, seed) = (self.augmentation.clone(), self.options.seed);
        move |batch: &mut Batch| augmentation.as_ref().map_or(Ok(()), |a| a.apply_batch(batch, seed, epoch))
    }

    /// The items `make` turns each batch's indices into (with the batch's size in bytes), on the
    /// caller's thread for in-memory data sets that are not augmented, else on a background thread
    /// through a bounded queue.
    fn batches<T, M>(&self, epoch: u64, skip: usize, mut make: M) -> EpochBatches<T>
    where
        T: Send + 'static,
        M: FnMut(&[usize]) -> Result<(usize, T)> + Send + 'static,
    {
        let plan: Vec<Vec<usize>> = self.batch_indices(epoch).into_iter().skip(skip).collect();
        // Augmenting costs more than handing a batch over: done ahead, on the worker thread.
        if self.dataset.is_in_memory() && self.augmentation.is_none() {
            return EpochBatches {
                source: Source::Inline { plan: plan.into_iter(), make: Box::new(make), ready: VecDeque::new() },
            };
        }
        let (sender, receiver) = sync_channel(self.options.prefetch.max(1));
        let worker = std::thread::Builder::new()
            .name("tfload-loader".to_string())
            .spawn(move || {
                for indices in plan {
                    let item = make(&indices).map(|(_, item)| item);
                    let failed = item.is_err();
                    if sender.send(item).is_err() || failed {
                        return; // the consumer is gone, or the error is delivered
                    }
                }
            })
            .expect("spawning the loader thread");
        EpochBatches { source: Source::Background { receiver: Some(receiver), worker: Some(worker) } }
    }
}

/// Turns a batch's indices into an item, with the batch's size in bytes.
type MakeItem<T> = Box<dyn FnMut(&[usize]) -> Result<(usize, T)> + Send>;

/// The batches of one epoch, in order. An error ends the epoch after it is delivered.
pub struct EpochBatches<T> {
    source: Source<T>,
}

/// Where an epoch's batches come from.
enum Source<T> {
    /// Gathered on demand on the consumer's thread.
    Inline {
        plan: std::vec::IntoIter<Vec<usize>>,
        make: MakeItem<T>,
        /// Items made ahead, in order; an error is the last one made.
        ready: VecDeque<Result<T>>,
    },
    /// Gathered ahead by a worker thread through a bounded queue.
    Background { receiver: Option<Receiver<Result<T>>>, worker: Option<JoinHandle<()>> },
}

impl<T> Iterator for EpochBatches<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        match &mut self.source {
            Source::Inline { plan, make, ready } => {
                if ready.is_empty() {
                    make_ahead(plan, make, ready);
                }
                ready.pop_front()
            }
            Source::Background { receiver, .. } => receiver.as_ref()?.recv().ok(),
        }
    }
}

/// Makes the next items of `plan` into `ready`, up to [`INLINE_AHEAD_BYTES`] of batches (at least
/// one), stopping after an error (the rest of the plan is dropped with it).
fn make_ahead<T>(plan: &mut std::vec::IntoIter<Vec<usize>>, make: &mut MakeItem<T>, ready: &mut VecDeque<Result<T>>) {
    let mut bytes = 0;
    while bytes < INLINE_AHEAD_BYTES {
        let Some(indices) = plan.next() else { return };
        match make(&indices) {
            Ok((size, item)) => {
                bytes += size.max(1);
                ready.push_back(Ok(item));
            }
            Err(error) => {
                ready.push_back(Err(error));
                plan.by_ref().for_each(drop);
                return;
            }
        }
    }
}

impl<T> Drop for EpochBatches<T> {
    fn drop(&mut self) {
        if let Source::Background { receiver, worker } = &mut self.source {
            // Closing the queue first unblocks a worker waiting to send.
            receiver.take();
            if let Some(worker) = worker.take() {
                let _ = worker.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ArrayDataset;
    use crate::tensor::TensorData;
    use ndarray::{ArrayD, IxDyn};

    fn dataset(n: usize) -> Arc<dyn Dataset> {
        let x = ArrayD::from_shape_fn(IxDyn(&[n, 2]), |i| (i[0] * 10 + i[1]) as f32);
        let y = ArrayD::from_shape_fn(IxDyn(&[n]), |i| i[0] as i64);
        Arc::new(ArrayDataset::new(TensorData::Float32(x), TensorData::Int64(y), "test").unwrap())
    }

    #[test]
    fn order_depends_only_on_seed_and_epoch() {
        assert_eq!(epoch_order(50, 7, 3, true), epoch_order(50, 7, 3, true));
        assert_ne!(epoch_order(50, 7, 3, true), epoch_order(50, 7, 4, true));
        assert_ne!(epoch_order(50, 7, 3, true), epoch_order(50, 8, 3, true));
        let mut sorted = epoch_order(50, 7, 3, true);
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(epoch_order(5, 7, 3, false), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn shards_tile_the_global_batches_and_drop_the_partial_one() {
        let options = LoaderOptions { batch_size: 6, seed: 3, ..LoaderOptions::default() };
        let whole = BatchLoader::new(dataset(20), LoaderOptions { drop_remainder: true, ..options });
        let shards: Vec<BatchLoader> =
            (0..3).map(|rank| BatchLoader::new(dataset(20), options).sharded(rank, 3).unwrap()).collect();
        for epoch in 0..2 {
            let global = whole.batch_indices(epoch);
            assert_eq!(global.len(), 3);
            for (i, batch) in global.iter().enumerate() {
                let joined: Vec<usize> = shards.iter().flat_map(|s| s.batch_indices(epoch)[i].clone()).collect();
                assert_eq!(&joined, batch);
            }
        }
        let error = BatchLoader::new(dataset(20), options).sharded(0, 4).err().unwrap().to_string();
        assert!(error.contains("multiple of 4"), "{error}");
    }

    #[test]
    fn last_partial_batch_kept_or_dropped() {
        let options = LoaderOptions { batch_size: 4, ..LoaderOptions::default() };
        let keep = BatchLoader::new(dataset(10), options);
        let sizes: Vec<usize> = keep.epoch(0, 0).map(|b| b.unwrap().len()).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        let drop = BatchLoader::new(dataset(10), LoaderOptions { drop_remainder: true, ..options });
        assert_eq!(drop.batches_per_epoch(), 2);
        assert_eq!(drop.epoch(0, 0).count(), 2);
    }

    #[test]
    fn batches_carry_the_rows_of_their_indices_and_skip_resumes_mid_epoch() {
        let loader = BatchLoader::new(dataset(9), LoaderOptions { batch_size: 3, seed: 5, ..LoaderOptions::default() });
        let all: Vec<Batch> = loader.epoch(2, 0).map(Result::unwrap).collect();
        for batch in &all {
            let TensorData::Int64(labels) = &batch.labels else { panic!() };
            assert_eq!(labels.iter().map(|&v| v as usize).collect::<Vec<_>>(), batch.indices);
        }
        let resumed: Vec<Batch> = loader.epoch(2, 1).map(Result::unwrap).collect();
        assert_eq!(resumed, all[1..].to_vec());
    }

    /// The same examples as `dataset(n)`, but gathered like data that decodes: on the worker
    /// thread. Fails on example `fail_at`.
    struct Decoding {
        inner: Arc<dyn Dataset>,
        fail_at: Option<usize>,
    }

    impl Dataset for Decoding {
        fn len(&self) -> usize {
            self.inner.len()
        }
        fn example_shape(&self) -> Vec<usize> {
            self.inner.example_shape()
        }
        fn describe(&self) -> String {
            "decoding".to_string()
        }
        fn gather(&self, indices: &[usize]) -> Result<Batch> {
            if let Some(bad) = self.fail_at.filter(|bad| indices.contains(bad)) {
                return Err(crate::error::Error::DataMismatch(format!("example {bad} is broken")));
            }
            self.inner.gather(indices)
        }
    }

    fn decoding(n: usize, fail_at: Option<usize>) -> Arc<dyn Dataset> {
        Arc::new(Decoding { inner: dataset(n), fail_at })
    }

    #[test]
    fn in_memory_and_background_gathering_give_the_same_batches() {
        let options = LoaderOptions { batch_size: 4, seed: 3, ..LoaderOptions::default() };
        assert!(dataset(1).is_in_memory() && !decoding(1, None).is_in_memory());
        let inline: Vec<Batch> = BatchLoader::new(dataset(18), options).epoch(1, 1).map(Result::unwrap).collect();
        let background: Vec<Batch> =
            BatchLoader::new(decoding(18, None), options).epoch(1, 1).map(Result::unwrap).collect();
        assert_eq!(inline.len(), 4);
        assert_eq!(inline, background);
    }

    #[test]
    fn an_error_is_delivered_once_and_ends_the_epoch_on_either_path() {
        let options = LoaderOptions { batch_size: 2, shuffle: false, ..LoaderOptions::default() };
        for in_memory in [true, false] {
            let data = if in_memory {
                let failing: Arc<dyn Dataset> = InMemory::wrap(decoding(10, Some(5)));
                failing
            } else {
                decoding(10, Some(5))
            };
            let items: Vec<Result<Batch>> = BatchLoader::new(data, options).epoch(0, 0).collect();
            assert_eq!(items.len(), 3, "in memory: {in_memory}");
            assert!(items[..2].iter().all(Result::is_ok));
            assert!(items[2].as_ref().unwrap_err().to_string().contains("example 5 is broken"));
        }
    }

    #[test]
    fn mapped_batches_are_the_epochs_batches_on_either_path() {
        let options = LoaderOptions { batch_size: 4, seed: 9, ..LoaderOptions::default() };
        let subset: Arc<dyn Dataset> = Arc::new(crate::data::Subset::new(dataset(30), (3..21).rev().collect(), "part"));
        for data in [dataset(18), subset, decoding(18, None)] {
            let loader = BatchLoader::new(data, options);
            let expected: Vec<Batch> = loader.epoch(2, 0).map(Result::unwrap).collect();
            let mapped: Vec<Batch> = loader.epoch_map(2, 0, |batch| Ok(batch.clone())).map(Result::unwrap).collect();
            assert_eq!(expected.iter().map(Batch::len).collect::<Vec<_>>(), vec![4, 4, 4, 4, 2]);
            assert_eq!(mapped, expected);
        }
    }

    /// Another data set, claiming to be in memory (so the inline path meets it), counting its
    /// gathers.
    struct InMemory {
        inner: Arc<dyn Dataset>,
        gathers: std::sync::atomic::AtomicUsize,
    }

    impl InMemory {
        fn wrap(inner: Arc<dyn Dataset>) -> Arc<InMemory> {
            Arc::new(InMemory { inner, gathers: Default::default() })
        }

        /// `n` examples of `floats` values each.
        fn floats(n: usize, floats: usize) -> Arc<InMemory> {
            let x = ArrayD::from_elem(IxDyn(&[n, floats]), 1.0f32);
            let y = ArrayD::from_elem(IxDyn(&[n]), 0i64);
            InMemory::wrap(Arc::new(ArrayDataset::new(TensorData::Float32(x), TensorData::Int64(y), "big").unwrap()))
        }

        fn count(&self) -> usize {
            self.gathers.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl Dataset for InMemory {
        fn len(&self) -> usize {
            self.inner.len()
        }
        fn example_shape(&self) -> Vec<usize> {
            self.inner.example_shape()
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn gather(&self, indices: &[usize]) -> Result<Batch> {
            self.gathers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.gather(indices)
        }
        fn gather_into(&self, indices: &[usize], batch: &mut Batch) -> Result<()> {
            self.gathers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.gather_into(indices, batch)
        }
        fn is_in_memory(&self) -> bool {
            true
        }
    }

    #[test]
    fn in_memory_batches_are_made_ahead_up_to_a_byte_budget() {
        // Small batches: the whole epoch in one go.
        let small = InMemory::floats(40, 2);
        let loader = BatchLoader::new(small.clone(), LoaderOptions { batch_size: 4, ..LoaderOptions::default() });
        let mut batches = loader.epoch_map(0, 0, |batch| Ok(batch.len()));
        assert_eq!(batches.next().unwrap().unwrap(), 4);
        assert_eq!(small.count(), 10);
        assert_eq!(batches.count(), 9);
        // Batches of half the budget (4 examples of an eighth): two at a time.
        let big = InMemory::floats(12, INLINE_AHEAD_BYTES / 8 / 4);
        let loader = BatchLoader::new(big.clone(), LoaderOptions { batch_size: 4, ..LoaderOptions::default() });
        let mut batches = loader.epoch_map(0, 0, |batch| Ok(batch.len()));
        batches.next().unwrap().unwrap();
        assert_eq!(big.count(), 2);
        batches.next().unwrap().unwrap();
        assert_eq!(big.count(), 2);
        batches.next().unwrap().unwrap();
        assert_eq!(big.count(), 3);
    }

    #[test]
    fn augmented_batches_are_the_same_when_resumed_and_differ_between_epochs() {
        let x = ArrayD::from_shape_fn(IxDyn(&[10, 4, 4, 1]), |i| (i[0] * 16 + i[1] * 4 + i[2]) as f32);
        let y = ArrayD::from_shape_fn(IxDyn(&[10]), |i| i[0] as i64);
        let data: Arc<dyn Dataset> =
            Arc::new(ArrayDataset::new(TensorData::Float32(x), TensorData::Int64(y), "images").unwrap());
        let options = LoaderOptions { batch_size: 3, seed: 4, ..LoaderOptions::default() };
        let plain = BatchLoader::new(data.clone(), options);
        assert!(!plain.augmentation_enabled());
        let augment: crate::data::Augmentation = "rotation=0.2,brightness=0.2".parse().unwrap();
        let loader = plain.clone().with_augmentation(augment).unwrap();
        assert!(loader.augmentation_enabled());
        let all: Vec<Batch> = loader.epoch(1, 0).map(Result::unwrap).collect();
        let resumed: Vec<Batch> = loader.epoch_map(1, 2, |b| Ok(b.clone())).map(Result::unwrap).collect();
        assert_eq!(resumed, all[2..].to_vec());
        let next: Vec<Batch> = loader.epoch(2, 0).map(Result::unwrap).collect();
        let unaugmented: Vec<Batch> = plain.epoch(1, 0).map(Result::unwrap).collect();
        assert_eq!(all[0].indices, unaugmented[0].indices, "augmentation leaves the order alone");
        assert_ne!(all[0].inputs, unaugmented[0].inputs);
        let first_of = |batches: &[Batch], example: usize| {
            let batch = batches.iter().find(|b| b.indices.contains(&example)).unwrap();
            let row = batch.indices.iter().position(|&i| i == example).unwrap();
            batch.inputs.select_rows(&[row])
        };
        assert_ne!(first_of(&all, 0), first_of(&next, 0), "epochs draw anew");
        let flat = BatchLoader::new(dataset(4), options).with_augmentation("flip=horizontal".parse().unwrap());
        assert!(flat.err().unwrap().to_string().contains("[height, width, channels]"));
    }

    #[test]
    fn dropping_an_epoch_early_stops_the_worker() {
        let loader = BatchLoader::new(decoding(100, None), LoaderOptions { batch_size: 1, ..LoaderOptions::default() });
        let mut batches = loader.epoch(0, 0);
        assert!(batches.next().is_some());
        drop(batches); // must not hang
    }
}
