//! Seeded generators: numpy-compatible legacy `np.random.RandomState` (MT19937, `random_sample` and the
//! polar-method `randn`), and SplitMix64 for sg2's own shuffles and coin flips.
//!
//! The official tools turn a seed into a latent with `np.random.RandomState(seed).randn(1, z_dim)`; reproducing
//! that stream bit for bit is what makes `seed6600.png` the same picture here as there.

use tch::Tensor;

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The legacy generator: MT19937 plus the cached second value of the polar method.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomState {
    key: [u32; N],
    pos: usize,
    has_gauss: bool,
    gauss: f64,
}

impl RandomState {
    /// `np.random.RandomState(seed)` for a scalar integer seed (numpy accepts exactly 0..=2^32-1).
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        key[0] = seed;
        for i in 1..N {
            let prev = key[i - 1];
            key[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        // pos == N: the first draw regenerates the whole block, as numpy's seeding leaves it.
        Self { key, pos: N, has_gauss: false, gauss: 0.0 }
    }

    fn generate(&mut self) {
        let k = &mut self.key;
        for i in 0..N {
            let y = (k[i] & UPPER_MASK) | (k[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            k[i] = k[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// One tempered 32-bit output of MT19937.
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.generate();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// A double in [0, 1) with 53 random bits, from two draws (27 + 26 bits), as numpy's `random_sample`.
    pub fn random_sample(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// One standard normal value by numpy's legacy gauss: Marsaglia's polar method, which makes two values per
    /// accepted pair and returns the second one on the next call.
    pub fn standard_normal(&mut self) -> f64 {
        if self.has_gauss {
            self.has_gauss = false;
            let g = self.gauss;
            self.gauss = 0.0;
            return g;
        }
        loop {
            let x1 = 2.0 * self.random_sample() - 1.0;
            let x2 = 2.0 * self.random_sample() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.gauss = f * x1;
                self.has_gauss = true;
                return f * x2;
            }
        }
    }

    /// `rnd.randn(n)`: `n` standard normal values in order.
    pub fn randn(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.standard_normal()).collect()
    }
}

/// SplitMix64: a small, well-mixed generator for shuffles and coin flips that must be reproducible from a seed.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `rnd.randn(*shape).astype(np.float32)` as a CPU float32 tensor: values drawn in row-major order as float64,
/// each rounded to nearest float32.
pub fn randn_tensor(rs: &mut RandomState, shape: &[i64]) -> Tensor {
    assert!(shape.iter().all(|&d| d >= 0), "randn_tensor: negative dimension in {shape:?}");
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rs.standard_normal() as f32).collect();
    Tensor::from_slice(&values).reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_outputs() {
        // First outputs of the reference mt19937ar.c seeded with init_genrand(5489), its default seed.
        let mut rs = RandomState::new(5489);
        let first: Vec<u32> = (0..5).map(|_| rs.next_u32()).collect();
        assert_eq!(first, [3_499_211_612, 581_869_302, 3_890_346_734, 3_586_334_585, 545_404_204]);
        // The 10000th output for that seed, as given by the C++ standard (std::mt19937 default seed).
        let mut rs = RandomState::new(5489);
        let last = (0..10_000).map(|_| rs.next_u32()).last().unwrap();
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn random_sample_uses_53_bits_from_two_draws() {
        let mut a = RandomState::new(7);
        let mut b = RandomState::new(7);
        for _ in 0..100 {
            let (hi, lo) = (b.next_u32() >> 5, b.next_u32() >> 6);
            let expected = ((u64::from(hi) << 26) | u64::from(lo)) as f64 / (1u64 << 53) as f64;
            let x = a.random_sample();
            assert_eq!(x.to_bits(), expected.to_bits());
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn has_gauss_caches_the_second_value() {
        let mut a = RandomState::new(6600);
        let mut joined = a.randn(1);
        joined.extend(a.randn(1));
        let both = RandomState::new(6600).randn(2);
        assert_eq!(joined, both);
        // Splitting at odd counts must not lose or repeat values either.
        let mut c = RandomState::new(6600);
        let mut parts = c.randn(3);
        parts.extend(c.randn(5));
        assert_eq!(parts, RandomState::new(6600).randn(8));
    }

    #[test]
    fn randn_tensor_is_row_major_float32() {
        let t = randn_tensor(&mut RandomState::new(3), &[2, 3, 4]);
        assert_eq!(t.size(), [2, 3, 4]);
        assert_eq!(t.kind(), tch::Kind::Float);
        let expected = RandomState::new(3).randn(24);
        for (i, e) in expected.iter().enumerate() {
            let (a, b, c) = (i as i64 / 12, (i as i64 / 4) % 3, i as i64 % 4);
            assert_eq!(t.double_value(&[a, b, c]) as f32, *e as f32);
        }
    }
}
