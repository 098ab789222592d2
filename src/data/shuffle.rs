//! Deterministic shuffles. A small local generator (SplitMix64) instead of `rand`, so an order
//! depends only on (seed, epoch) and never on a dependency's version: a resumed run finds its
//! data exactly where it stopped.

use super::error::DataError;

/// The stream that splits train from validation, apart from every epoch's stream.
const SPLIT_STREAM: u64 = u64::MAX;

pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64, stream: u64) -> SplitMix64 {
        let mut rng = SplitMix64(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        rng.next_u64();
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-40 for any realistic n).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher-Yates.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// A permutation of `0..len` fixed by `seed` and `epoch`.
pub fn seeded_shuffle(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    SplitMix64::new(seed, epoch).shuffle(&mut order);
    order
}

/// Splits `items` into (train, validation) with `validation_fraction` of them, rounded, in
/// validation (at least one of each side when the fraction is above 0 and there are two
/// items). Both keep the file's order; the choice depends only on `seed`.
pub fn split_by_ratio<T>(items: Vec<T>, validation_fraction: f64, seed: u64) -> Result<(Vec<T>, Vec<T>), DataError> {
    if !(0.0..1.0).contains(&validation_fraction) {
        return Err(DataError::InvalidOption(format!("validation fraction {validation_fraction} is not in [0, 1)")));
    }
    let n = items.len();
    let mut n_val = (n as f64 * validation_fraction).round() as usize;
    if validation_fraction > 0.0 && n >= 2 {
        n_val = n_val.clamp(1, n - 1);
    }
    let mut in_validation = vec![false; n];
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::new(seed, SPLIT_STREAM).shuffle(&mut order);
    for &i in &order[..n_val] {
        in_validation[i] = true;
    }
    let (mut train, mut validation) = (Vec::with_capacity(n - n_val), Vec::with_capacity(n_val));
    for (item, val) in items.into_iter().zip(in_validation) {
        if val { validation.push(item) } else { train.push(item) }
    }
    Ok((train, validation))
}
