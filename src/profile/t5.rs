//! The GreenTrainer reference's accounting of T5, for reproducing the paper's numbers.

use crate::model::graph::{OpSpec, Stream};

/// The accounting of the GreenTrainer reference (`tensor_flops.py`), which the paper's FLAN-T5 figures
/// follow: the cross-attention keys/values are charged at the decoder length, although they project
/// the encoder output. Only for reproducing the paper; the engine charges what runs.
pub fn paper_accounting(mut ops: Vec<OpSpec>) -> Vec<OpSpec> {
    for op in &mut ops {
        if op.name.ends_with(".EncDecAttention.k.weight") || op.name.ends_with(".EncDecAttention.v.weight") {
            op.stream = Stream::Decoder;
        }
    }
    ops
}
