//! Presenting MAC counts: FLOPs = 2 x MAC for users, 1 MAC = 1 FLOP where comparing with the paper.

use serde::{Deserialize, Serialize};

/// FLOPs per multiply-accumulate as users are shown them (the profiler counts MACs).
pub const FLOPS_PER_MAC: f64 = 2.0;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FlopsConvention {
    /// Multiply and add counted separately: FLOPs = 2 x MAC.
    #[default]
    Flops,
    /// The GreenTrainer paper's tables: 1 MAC counted as 1 FLOP.
    PaperMac,
}

impl FlopsConvention {
    pub fn from_macs(self, macs: f64) -> f64 {
        match self {
            Self::Flops => FLOPS_PER_MAC * macs,
            Self::PaperMac => macs,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Flops => "FLOPs (2 x MAC)",
            Self::PaperMac => "FLOPs (paper: 1 MAC = 1 FLOP)",
        }
    }

    /// `macs` in this convention with an SI prefix, e.g. "12.3 TFLOPs (2 x MAC)".
    pub fn format(self, macs: f64) -> String {
        const PREFIXES: [(f64, &str); 6] = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
        let value = self.from_macs(macs);
        let (scale, prefix) = PREFIXES.iter().copied().find(|&(scale, _)| value.abs() >= scale).unwrap_or((1.0, ""));
        format!("{:.3} {prefix}{}", value / scale, self.label())
    }
}
