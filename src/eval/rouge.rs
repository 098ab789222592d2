//! ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum computed the way Google's `rouge-score` 0.1.2
//! does (the scorer behind HF `evaluate`'s "rouge"), so numbers are comparable with papers.
//!
//! Tokens: lowercase, every run of characters outside `[a-z0-9]` is a separator; with the
//! stemmer, tokens longer than 3 characters go through NLTK's Porter stemmer.
//! ROUGE-Lsum splits each text into sentences on `'\n'` only.

use std::collections::{BTreeSet, HashMap};

use super::porter;

/// Scoring options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RougeOptions {
    /// Stem tokens longer than 3 characters with the Porter stemmer (`use_stemmer=True`).
    pub use_stemmer: bool,
}

/// Precision, recall and F1 of one metric, as fractions in `[0, 1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

/// All four metrics for one prediction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RougeScores {
    pub rouge1: Score,
    pub rouge2: Score,
    pub rouge_l: Score,
    pub rouge_lsum: Score,
}

/// Corpus-level ROUGE: the mean per-example F1 of each metric, as fractions.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CorpusRouge {
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
    pub rouge_lsum: f64,
    /// Number of examples averaged.
    pub count: usize,
}

/// Splits `text` into rouge-score tokens.
pub fn tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    // Lowercasing per character matches Python's `str.lower()` for every character that can
    // end up in a token (e.g. the Kelvin sign becomes 'k', 'İ' becomes 'i' plus a combining dot).
    let mut normalized = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        normalized.push(if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { ' ' });
    }
    normalized.split_ascii_whitespace().map(|t| if use_stemmer && t.len() > 3 { porter::stem(t) } else { t.to_string() }).collect()
}

/// Scores `prediction` against a single `reference`.
pub fn score(prediction: &str, reference: &str, opts: &RougeOptions) -> RougeScores {
    score_texts(&Text::new(prediction, opts), &Text::new(reference, opts))
}

/// Scores `prediction` against several references, keeping per metric the reference with the
/// highest F1 (the first one on ties), as `score_multi` does. No references scores all zeros.
pub fn score_multi(prediction: &str, references: &[String], opts: &RougeOptions) -> RougeScores {
    let pred = Text::new(prediction, opts);
    let mut all = references.iter().map(|r| score_texts(&pred, &Text::new(r, opts)));
    let Some(mut best) = all.next() else {
        return RougeScores::default();
    };
    let keep_better = |best: &mut Score, s: Score| {
        if s.fmeasure > best.fmeasure {
            *best = s;
        }
    };
    for s in all {
        keep_better(&mut best.rouge1, s.rouge1);
        keep_better(&mut best.rouge2, s.rouge2);
        keep_better(&mut best.rouge_l, s.rouge_l);
        keep_better(&mut best.rouge_lsum, s.rouge_lsum);
    }
    best
}

/// Mean per-example F1 over pairs `(predictions[i], references[i])`, each example scored with
/// [`score_multi`]. Extra items in the longer slice are ignored; `count` says how many were used.
pub fn corpus_score(predictions: &[String], references: &[Vec<String>], opts: &RougeOptions) -> CorpusRouge {
    let mut sum = CorpusRouge::default();
    for (pred, refs) in predictions.iter().zip(references) {
        let s = score_multi(pred, refs, opts);
        sum.rouge1 += s.rouge1.fmeasure;
        sum.rouge2 += s.rouge2.fmeasure;
        sum.rouge_l += s.rouge_l.fmeasure;
        sum.rouge_lsum += s.rouge_lsum.fmeasure;
        sum.count += 1;
    }
    let n = sum.count.max(1) as f64;
    CorpusRouge {
        rouge1: sum.rouge1 / n,
        rouge2: sum.rouge2 / n,
        rouge_l: sum.rouge_l / n,
        rouge_lsum: sum.rouge_lsum / n,
        count: sum.count,
    }
}

/// A text tokenized both as a whole and per newline-separated sentence (for ROUGE-Lsum).
struct Text {
    tokens: Vec<String>,
    sentences: Vec<Vec<String>>,
}

impl Text {
    fn new(text: &str, opts: &RougeOptions) -> Self {
        Text {
            tokens: tokenize(text, opts.use_stemmer),
            // Empty lines are dropped, but a line of punctuation stays as an empty sentence.
            sentences: text.split('\n').filter(|s| !s.is_empty()).map(|s| tokenize(s, opts.use_stemmer)).collect(),
        }
    }
}

fn score_texts(pred: &Text, reference: &Text) -> RougeScores {
    RougeScores {
        rouge1: ngram_score(&pred.tokens, &reference.tokens, 1),
        rouge2: ngram_score(&pred.tokens, &reference.tokens, 2),
        rouge_l: lcs_score(&pred.tokens, &reference.tokens),
        rouge_lsum: summary_lcs_score(&pred.sentences, &reference.sentences),
    }
}

fn from_counts(hits: usize, pred_total: usize, ref_total: usize) -> Score {
    let precision = hits as f64 / pred_total as f64;
    let recall = hits as f64 / ref_total as f64;
    // Same expression and order as rouge-score, so results agree to the last bit.
    let fmeasure = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
    Score { precision, recall, fmeasure }
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

/// Clipped n-gram overlap; an empty side counts as one n-gram so the result is 0, not NaN.
fn ngram_score(pred: &[String], reference: &[String], n: usize) -> Score {
    let pred_counts = ngram_counts(pred, n);
    let ref_counts = ngram_counts(reference, n);
    let hits = ref_counts.iter().map(|(g, &c)| c.min(pred_counts.get(g).copied().unwrap_or(0))).sum();
    let pred_total = pred.len().saturating_sub(n - 1);
    let ref_total = reference.len().saturating_sub(n - 1);
    from_counts(hits, pred_total.max(1), ref_total.max(1))
}

fn lcs_score(pred: &[String], reference: &[String]) -> Score {
    if pred.is_empty() || reference.is_empty() {
        return Score::default();
    }
    // Only the length is needed here, so two rows of the DP table suffice.
    let mut prev = vec![0usize; pred.len() + 1];
    let mut cur = prev.clone();
    for r in reference {
        for (j, p) in pred.iter().enumerate() {
            cur[j + 1] = if r == p { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    from_counts(prev[pred.len()], pred.len(), reference.len())
}

/// Indices into `reference` of one LCS with `cand`, in increasing order. The backtracking
/// tie-break (step left only when strictly better) must match rouge-score's, since which LCS
/// is picked changes the ROUGE-Lsum union.
fn lcs_indices(reference: &[String], cand: &[String]) -> Vec<usize> {
    let cols = cand.len() + 1;
    let mut table = vec![0usize; (reference.len() + 1) * cols];
    for i in 1..=reference.len() {
        for j in 1..=cand.len() {
            table[i * cols + j] = if reference[i - 1] == cand[j - 1] {
                table[(i - 1) * cols + j - 1] + 1
            } else {
                table[(i - 1) * cols + j].max(table[i * cols + j - 1])
            };
        }
    }
    let (mut i, mut j) = (reference.len(), cand.len());
    let mut indices = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == cand[j - 1] {
            indices.push(i - 1);
            i -= 1;
            j -= 1;
        } else if table[i * cols + j - 1] > table[(i - 1) * cols + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    indices.reverse();
    indices
}

/// Summary-level LCS (ROUGE paper, section 3.2): for each reference sentence, the union of its
/// LCS with every predicted sentence; a token counts as a hit at most as often as it occurs in
/// each summary, as in ROUGE 1.5.5.
fn summary_lcs_score(pred: &[Vec<String>], reference: &[Vec<String>]) -> Score {
    let pred_total: usize = pred.iter().map(Vec::len).sum();
    let ref_total: usize = reference.iter().map(Vec::len).sum();
    if pred_total == 0 || ref_total == 0 {
        return Score::default();
    }
    let mut left_in_pred: HashMap<&str, usize> = HashMap::new();
    for t in pred.iter().flatten() {
        *left_in_pred.entry(t).or_insert(0) += 1;
    }
    let mut left_in_ref: HashMap<&str, usize> = HashMap::new();
    for t in reference.iter().flatten() {
        *left_in_ref.entry(t).or_insert(0) += 1;
    }
    let mut hits = 0;
    for sentence in reference {
        let union: BTreeSet<usize> = pred.iter().flat_map(|c| lcs_indices(sentence, c)).collect();
        for i in union {
            let token = sentence[i].as_str();
            if let (Some(p @ 1..), Some(r @ 1..)) = (left_in_pred.get_mut(token), left_in_ref.get_mut(token)) {
                *p -= 1;
                *r -= 1;
                hits += 1;
            }
        }
    }
    from_counts(hits, pred_total, ref_total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: RougeOptions = RougeOptions { use_stemmer: false };

    #[test]
    fn tokenizer_matches_rouge_score() {
        assert_eq!(tokenize("Hello, World! #Person1#'s x-ray", false), ["hello", "world", "person1", "s", "x", "ray"]);
        assert_eq!(tokenize("naïve café 日本 \u{212A}m", false), ["na", "ve", "caf", "km"]);
        assert_eq!(tokenize("The runners were running", true), ["the", "runner", "were", "run"]);
        assert!(tokenize("  ...  ", true).is_empty());
    }

    #[test]
    fn empty_prediction_scores_zero() {
        let s = score("", "a b c", &PLAIN);
        assert_eq!(s, RougeScores::default());
        assert_eq!(score("!!!", "", &PLAIN), RougeScores::default());
    }

    #[test]
    fn identical_texts_score_one() {
        let s = score("the cat sat\non the mat", "the cat sat\non the mat", &PLAIN);
        for m in [s.rouge1, s.rouge2, s.rouge_l, s.rouge_lsum] {
            assert_eq!((m.precision, m.recall, m.fmeasure), (1.0, 1.0, 1.0));
        }
    }

    #[test]
    fn lsum_uses_union_of_sentence_lcs() {
        // Example from the ROUGE paper, section 3.2: union LCS hits are w1 w2 w3 w5 of 5 reference tokens.
        let s = score("w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5", "w1 w2 w3 w4 w5", &PLAIN);
        assert!((s.rouge_lsum.recall - 0.8).abs() < 1e-12);
        assert!((s.rouge_lsum.precision - 0.4).abs() < 1e-12);
        // Without newlines it is plain ROUGE-L.
        let flat = score("a b c d", "a c b d", &PLAIN);
        assert_eq!(flat.rouge_lsum, flat.rouge_l);
        assert!((flat.rouge_l.fmeasure - 0.75).abs() < 1e-12);
    }

    #[test]
    fn multi_reference_keeps_best_per_metric() {
        let refs = vec!["x y z".to_string(), "the cat sat".to_string(), "the cat sat".to_string()];
        let s = score_multi("the cat sat down", &refs, &PLAIN);
        assert_eq!(s, score("the cat sat down", "the cat sat", &PLAIN));
        assert_eq!(score_multi("a", &[], &PLAIN), RougeScores::default());
    }

    #[test]
    fn corpus_is_mean_f1() {
        let preds = vec!["a b".to_string(), "c".to_string()];
        let refs = vec![vec!["a b".to_string()], vec!["d".to_string()]];
        let c = corpus_score(&preds, &refs, &PLAIN);
        assert_eq!(c.count, 2);
        assert!((c.rouge1 - 0.5).abs() < 1e-12 && (c.rouge_l - 0.5).abs() < 1e-12);
        assert_eq!(corpus_score(&[], &[], &PLAIN), CorpusRouge::default());
    }
}
