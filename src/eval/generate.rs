//! Text generation with the KV cache: greedy, sampling (temperature, top-p) and beam search,
//! following transformers' `generate` (repetition penalty on the scores, length-normalised beams).

use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::model::t5::{T5, T5Cache};
use crate::model::{KvCache, Model, attention_mask};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Strategy {
    Greedy,
    Sample { temperature: f32, top_p: f32, seed: u64 },
    Beam { num_beams: usize, length_penalty: f32 },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateOptions {
    pub strategy: Strategy,
    pub max_new_tokens: usize,
    /// 1.0 disables it; the paper uses 2.5 with beam search.
    pub repetition_penalty: f32,
    /// Generation stops at any of these (an empty list never stops early).
    pub eos_token_ids: Vec<u32>,
    /// Recompute the whole prefix every step instead of caching keys and values (for benchmarks).
    pub use_cache: bool,
}

impl GenerateOptions {
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self { strategy: Strategy::Greedy, max_new_tokens, repetition_penalty: 1.0, eos_token_ids: Vec::new(), use_cache: true }
    }
}

/// Runs the model over growing sequences of several rows, with or without the KV cache. A
/// decoder-only model's sequences are prompt + generated tokens; an encoder-decoder model encodes
/// the prompt once and its sequences are decoder start token + generated tokens.
struct Decoder<'a> {
    model: &'a Model,
    state: State<'a>,
}

enum State<'a> {
    Causal(Option<KvCache>),
    /// Boxed: tensors are large handles.
    Seq2Seq(Box<Seq2SeqState<'a>>),
}

struct Seq2SeqState<'a> {
    t5: &'a T5,
    encoder_out: Tensor<3>,
    cache: Option<T5Cache>,
}

impl<'a> Decoder<'a> {
    /// The decoder and the sequence generation starts from.
    fn new(model: &'a Model, prompt: &[u32], use_cache: bool) -> (Self, Vec<u32>) {
        match model {
            Model::T5(t5) => {
                let ids = Tensor::<2, Int>::from_data(TensorData::new(ids_i64(prompt), [1, prompt.len()]), &model.device());
                let state =
                    State::Seq2Seq(Box::new(Seq2SeqState { t5, encoder_out: t5.encode(ids, None), cache: use_cache.then(T5Cache::new) }));
                (Self { model, state }, vec![t5.config.decoder_start_token_id])
            }
            _ => (Self { model, state: State::Causal(use_cache.then(|| KvCache::new(model.info().layers))) }, prompt.to_vec()),
        }
    }

    /// Next-token logits `[rows][vocab]` for `seqs` (all the same length). With the cache only the
    /// tokens not yet seen are fed.
    fn next_logits(&mut self, seqs: &[Vec<u32>]) -> crate::error::Result<Vec<Vec<f32>>> {
        let device = self.model.device();
        let past = match &self.state {
            State::Causal(cache) => cache.as_ref().map_or(0, KvCache::len),
            State::Seq2Seq(s) => s.cache.as_ref().map_or(0, T5Cache::len),
        };
        let rows = seqs.len();
        let new = seqs[0].len() - past;
        let ids: Vec<i64> = seqs.iter().flat_map(|s| ids_i64(&s[past..])).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, new]), &device);
        let logits = match &mut self.state {
            State::Seq2Seq(s) => {
                let Seq2SeqState { t5, encoder_out, cache } = s.as_mut();
                // Without a cache every step reads the encoder output, once per row.
                let encoder_out = match cache {
                    None if rows > 1 => encoder_out.clone().select(0, Tensor::<1, Int>::zeros([rows], &device)),
                    _ => encoder_out.clone(),
                };
                t5.decode(&encoder_out, None, ids, cache.as_mut())
            }
            State::Causal(cache) => {
                let mask = (new > 1).then(|| attention_mask(None, rows, new, past));
                self.model.forward(ids, mask.as_ref(), cache.as_mut())?
            }
        };
        let vocab = logits.dims()[2];
        let last: Vec<f32> = logits.narrow(1, new - 1, 1).reshape([rows, vocab]).try_into_vec_as::<f32>().unwrap_or_default();
        Ok(last.chunks(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Beam search keeps `rows` hypotheses; after re-ranking, the cache follows their parents.
    fn reorder(&mut self, parents: &[usize]) {
        let idx: Vec<i64> = parents.iter().map(|&p| p as i64).collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(idx, [parents.len()]), &self.model.device());
        match &mut self.state {
            State::Causal(Some(cache)) => cache.select_rows(rows),
            State::Seq2Seq(s) => {
                if let Some(cache) = &mut s.cache {
                    cache.select_rows(rows, parents);
                }
            }
            State::Causal(None) => {}
        }
    }
}

/// Generation ends (with what it has) when the model fails or its scores stop being numbers
/// (NaN weights, a diverged model), which would otherwise pick token 0 forever; the failure is
/// logged.
fn logits_or_stop(logits: crate::error::Result<Vec<Vec<f32>>>) -> Option<Vec<Vec<f32>>> {
    match logits {
        Ok(rows) if rows.iter().flatten().any(|v| v.is_nan()) => {
            tracing::error!("generation stopped: the model's scores are NaN (its weights or config give non-finite values)");
            None
        }
        Ok(rows) => Some(rows),
        Err(e) => {
            tracing::error!("generation stopped: {e}");
            None
        }
    }
}

fn ids_i64(ids: &[u32]) -> Vec<i64> {
    ids.iter().map(|&t| t as i64).collect()
}

/// Generates up to `max_new_tokens` after `prompt`, never past the model's last position (see
/// `Model::position_limit`); returns only the new tokens (EOS excluded). An encoder-decoder model
/// reads `prompt` as its encoder input (with the tokenizer's special tokens, see
/// `LoadedModel::prompt_ids`) and decodes from its decoder start token.
pub fn generate(model: &Model, prompt: &[u32], opts: &GenerateOptions) -> Vec<u32> {
    generate_streaming(model, prompt, opts, &mut |_| true)
}

/// [`generate`], calling `on_token` with the tokens generated so far after each new one; it
/// returns false to stop there. Beam search ranks whole hypotheses, so it calls `on_token` once,
/// with the winner.
pub fn generate_streaming(model: &Model, prompt: &[u32], opts: &GenerateOptions, on_token: &mut dyn FnMut(&[u32]) -> bool) -> Vec<u32> {
    let room = model.position_limit().map_or(usize::MAX, |n| n.saturating_sub(prompt.len()));
    if room == 0 {
        tracing::warn!("a {}-token prompt fills the model's positions: nothing generated", prompt.len());
    }
    let capped;
    let opts = if opts.max_new_tokens > room {
        capped = GenerateOptions { max_new_tokens: room, ..opts.clone() };
        &capped
    } else {
        opts
    };
    if prompt.is_empty() || opts.max_new_tokens == 0 {
        return Vec::new();
    }
    match opts.strategy {
        Strategy::Beam { num_beams, length_penalty } if num_beams > 1 => {
            let best = beam_search(model, prompt, opts, num_beams, length_penalty);
            on_token(&best);
            best
        }
        _ => sample_or_greedy(model, prompt, opts, on_token),
    }
}

fn sample_or_greedy(model: &Model, prompt: &[u32], opts: &GenerateOptions, on_token: &mut dyn FnMut(&[u32]) -> bool) -> Vec<u32> {
    let (mut decoder, mut seq) = Decoder::new(model, prompt, opts.use_cache);
    let start = seq.len();
    let mut rng = match opts.strategy {
        Strategy::Sample { seed, .. } => Some(StdRng::seed_from_u64(seed)),
        _ => None,
    };
    for _ in 0..opts.max_new_tokens {
        let Some(mut logits) = logits_or_stop(decoder.next_logits(std::slice::from_ref(&seq))).and_then(|mut l| l.pop()) else { break };
        apply_repetition_penalty(&mut logits, &seq, opts.repetition_penalty);
        let next = match (&opts.strategy, rng.as_mut()) {
            (Strategy::Sample { temperature, top_p, .. }, Some(rng)) => sample_top_p(&logits, *temperature, *top_p, rng),
            _ => argmax(&logits),
        };
        if opts.eos_token_ids.contains(&next) {
            break;
        }
        seq.push(next);
        if !on_token(&seq[start..]) {
            break;
        }
    }
    seq.split_off(start)
}

/// transformers' RepetitionPenaltyLogitsProcessor: scores of tokens already in the sequence are
/// divided by the penalty when positive and multiplied when negative.
fn apply_repetition_penalty(scores: &mut [f32], seq: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; scores.len()];
    for &t in seq {
        if let Some(s) = seen.get_mut(t as usize) {
            *s = true;
        }
    }
    for (score, _) in scores.iter_mut().zip(&seen).filter(|(_, s)| **s) {
        *score = if *score < 0.0 { *score * penalty } else { *score / penalty };
    }
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0 as u32
}

fn log_softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + v.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
    v.iter().map(|x| x - lse).collect()
}

fn sample_top_p(logits: &[f32], temperature: f32, top_p: f32, rng: &mut StdRng) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let probs: Vec<f32> = log_softmax(&scaled).into_iter().map(f32::exp).collect();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    // Keep the smallest prefix whose mass reaches top_p (always at least one token).
    let mut kept = Vec::new();
    let mut mass = 0.0;
    for &i in &order {
        kept.push(i);
        mass += probs[i];
        if mass >= top_p {
            break;
        }
    }
    let mut r = rng.random::<f32>() * mass;
    for &i in &kept {
        r -= probs[i];
        if r <= 0.0 {
            return i as u32;
        }
    }
    kept[kept.len() - 1] as u32
}

struct Hypothesis {
    tokens: Vec<u32>,
    score: f32,
}

/// Beam search as transformers' `_beam_search` (early_stopping=False): log-softmax, repetition
/// penalty on the log-probabilities, top 2*beams candidates, finished hypotheses scored by
/// sum_logprobs / generated_len^length_penalty.
fn beam_search(model: &Model, prompt: &[u32], opts: &GenerateOptions, num_beams: usize, length_penalty: f32) -> Vec<u32> {
    let (mut decoder, start) = Decoder::new(model, prompt, opts.use_cache);
    let prompt_len = start.len();
    let mut beams: Vec<(Vec<u32>, f32)> = vec![(start, 0.0)];
    let mut finished: Vec<Hypothesis> = Vec::new();
    let norm = |sum: f32, len: usize| sum / (len.max(1) as f32).powf(length_penalty);
    for step in 0..opts.max_new_tokens {
        let seqs: Vec<Vec<u32>> = beams.iter().map(|b| b.0.clone()).collect();
        let Some(logits) = logits_or_stop(decoder.next_logits(&seqs)) else { break };
        let mut candidates: Vec<(f32, usize, u32)> = Vec::new();
        for (row, ((seq, beam_score), logits)) in beams.iter().zip(logits).enumerate() {
            let mut scores = log_softmax(&logits);
            apply_repetition_penalty(&mut scores, seq, opts.repetition_penalty);
            candidates.extend(top_k(&scores, 2 * num_beams).into_iter().map(|(tok, s)| (beam_score + s, row, tok)));
        }
        candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut next: Vec<(Vec<u32>, f32)> = Vec::new();
        let mut parents = Vec::new();
        for (rank, &(score, row, tok)) in candidates.iter().take(2 * num_beams).enumerate() {
            if opts.eos_token_ids.contains(&tok) {
                // Like transformers, an EOS ranked below the first num_beams candidates is ignored.
                if rank < num_beams {
                    finished.push(Hypothesis { tokens: beams[row].0[prompt_len..].to_vec(), score: norm(score, step + 1) });
                }
                continue;
            }
            let mut seq = beams[row].0.clone();
            seq.push(tok);
            next.push((seq, score));
            parents.push(row);
            if next.len() == num_beams {
                break;
            }
        }
        finished.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
        finished.truncate(num_beams);
        let best_running = next.first().map(|b| norm(b.1, step + 1)).unwrap_or(f32::NEG_INFINITY);
        let done = finished.len() == num_beams && finished.last().is_some_and(|w| w.score >= best_running);
        if next.is_empty() || done {
            beams = next;
            break;
        }
        decoder.reorder(&parents);
        beams = next;
    }
    for (seq, score) in beams {
        let len = seq.len() - prompt_len;
        finished.push(Hypothesis { tokens: seq[prompt_len..].to_vec(), score: norm(score, len) });
    }
    finished.into_iter().max_by(|a, b| a.score.total_cmp(&b.score)).map(|h| h.tokens).unwrap_or_default()
}

fn top_k(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| scores[b].total_cmp(&scores[a]));
    idx.truncate(k);
    idx.into_iter().map(|i| (i as u32, scores[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_follows_transformers() {
        let mut s = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut s, &[0, 1], 2.0);
        assert_eq!(s, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_p_keeps_the_head_of_the_distribution() {
        let mut rng = StdRng::seed_from_u64(1);
        // One token holds ~all the mass: top_p 0.5 must always pick it.
        let logits = [10.0, 0.0, 0.0, 0.0];
        assert!((0..50).all(|_| sample_top_p(&logits, 1.0, 0.5, &mut rng) == 0));
    }

    #[test]
    fn top_k_returns_the_largest() {
        let mut got = top_k(&[0.1, 0.9, 0.5, 0.7], 2);
        got.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1, 3]);
    }
}
