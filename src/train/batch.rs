//! A host-side batch moved onto the device.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::Batch;
use crate::model::attention_mask;
use crate::profile::BatchShape;

pub struct DeviceBatch {
    pub ids: Tensor<2, Int>,
    pub mask: Tensor<4>,
    pub labels: Vec<i64>,
    pub shape: BatchShape,
    pub real_tokens: usize,
}

impl DeviceBatch {
    pub fn new(batch: &Batch, device: &Device) -> Self {
        let ids: Vec<i64> = batch.input_ids.iter().map(|&t| t as i64).collect();
        Self {
            ids: Tensor::from_data(TensorData::new(ids, [batch.batch, batch.seq]), device),
            mask: attention_mask(Some(&batch.attention_mask), batch.batch, batch.seq, 0, device),
            labels: batch.labels.clone(),
            shape: BatchShape { batch: batch.batch, seq: batch.seq, decoder_seq: None },
            real_tokens: batch.real_tokens,
        }
    }
}
