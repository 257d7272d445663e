//! A small deterministic generator (xorshift) for the codec's tests.

pub(crate) struct Pick(pub u64);

impl Pick {
    /// A number below `n`.
    pub fn n(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    /// One of `xs`.
    pub fn of<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.n(xs.len())].clone()
    }
}
