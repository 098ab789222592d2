//! Prompt templates and the encoder that turns a mapped row into token ids for causal-LM
//! training: `{source} TL;DR: {target}` followed by EOS, with the loss on the target only.
//!
//! The pieces (template text, source, target) are encoded separately, without special tokens,
//! and their ids concatenated. Cutting the source is then exact (drop source ids, no
//! re-tokenisation that could shift the boundary) and the prompt/target boundary always
//! falls between tokens. The whitespace that precedes `{target}` in the template is encoded
//! with the target (" summary"), as byte-level BPE tokenises it in running text. For the
//! byte-level BPE tokenizers of OPT, BLOOM, GPT-2 and SmolLM2 this gives the ids of the joint
//! string except, rarely, at a piece boundary; a SentencePiece tokenizer that marks the start of
//! every encoded text adds a word-start marker to each piece.

use tokenizers::Tokenizer;

use super::error::{DataError, RowPosition};
use super::mapping::{MappedRow, Mapping};

/// The label that tells the loss to ignore a position (prompt and padding).
pub const IGNORE_INDEX: i64 = -100;

const SOURCE: &str = "{source}";
const TARGET: &str = "{target}";

/// A template with one `{source}` and, after it, one `{target}`; EOS follows the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    text: String,
    before_source: String,
    /// Text between source and target, trailing whitespace removed (it goes with the target).
    between: String,
    target_prefix: String,
    after_target: String,
}

impl PromptTemplate {
    /// The paper's prompt.
    pub const SUMMARY: &'static str = "{source} TL;DR: {target}";
    /// For chat data, whose rendered source already ends with the assistant cue.
    pub const CHAT: &'static str = "{source}{target}";

    pub fn parse(text: &str) -> Result<PromptTemplate, DataError> {
        let invalid = |why: &str| DataError::InvalidOption(format!("prompt template {text:?}: {why}"));
        if text.matches(SOURCE).count() != 1 || text.matches(TARGET).count() != 1 {
            return Err(invalid("needs exactly one {source} and one {target}"));
        }
        let (before_source, rest) = text.split_once(SOURCE).ok_or_else(|| invalid("no {source}"))?;
        let (middle, after_target) = rest.split_once(TARGET).ok_or_else(|| invalid("{target} must come after {source}"))?;
        let between = middle.trim_end();
        Ok(PromptTemplate {
            text: text.to_owned(),
            before_source: before_source.to_owned(),
            between: between.to_owned(),
            target_prefix: middle[between.len()..].to_owned(),
            after_target: after_target.to_owned(),
        })
    }

    /// `SUMMARY`, or `CHAT` for conversations.
    pub fn default_for(mapping: &Mapping) -> PromptTemplate {
        let text = if mapping.is_chat() { Self::CHAT } else { Self::SUMMARY };
        Self::parse(text).unwrap_or_else(|_| unreachable!("built-in templates parse"))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// One tokenized training (or prediction) example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Prompt ids, then target ids and EOS (none for a prediction-only row).
    pub input_ids: Vec<u32>,
    /// `input_ids[..prompt_len]` is the prompt: the generation input at evaluation time, where
    /// `LoadOptions::answer_room` keeps room for the tokens to generate.
    pub prompt_len: usize,
    /// Reference summaries for evaluation; `references[0]` is the training target.
    pub references: Vec<String>,
    pub at: RowPosition,
    /// Length the example would have without truncation.
    pub untruncated_len: usize,
    pub source_truncated: bool,
    /// The target alone did not fit: its tail and the EOS were cut.
    pub target_truncated: bool,
}

impl Example {
    pub fn seq_len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn prompt_ids(&self) -> &[u32] {
        &self.input_ids[..self.prompt_len]
    }

    /// Tokens with a training target: the answer and its EOS (the tokens the LM head is run on).
    pub fn target_len(&self) -> usize {
        self.input_ids.len() - self.prompt_len
    }

    /// Labels aligned with `input_ids` (not shifted: the loss shifts, as in Hugging Face):
    /// the token id on target positions, `IGNORE_INDEX` on the prompt.
    pub fn labels(&self) -> Vec<i64> {
        let (prompt, target) = self.input_ids.split_at(self.prompt_len);
        prompt.iter().map(|_| IGNORE_INDEX).chain(target.iter().map(|&id| i64::from(id))).collect()
    }
}

/// How an encoder-decoder model (T5) reads an example: the prompt goes to the encoder wrapped in the
/// special tokens the tokenizer adds to a single text (T5's `$A </s>`; none for a tokenizer without
/// a template), as `tokenizer(source)` does in transformers; the target (+ EOS) goes to the decoder.
/// `max_len` then caps each of the two separately.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seq2Seq {
    pub source_prefix: Vec<u32>,
    pub source_suffix: Vec<u32>,
}

impl Seq2Seq {
    /// The special tokens `tokenizer` puts before and after a single text.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Seq2Seq, DataError> {
        let tokenize =
            |special: bool| tokenizer.encode("a", special).map(|e| e.get_ids().to_vec()).map_err(|e| DataError::Tokenizer(e.to_string()));
        let (plain, wrapped) = (tokenize(false)?, tokenize(true)?);
        let at = (0..=wrapped.len().saturating_sub(plain.len()))
            .find(|&i| wrapped[i..].starts_with(&plain))
            .ok_or_else(|| DataError::Tokenizer("the tokenizer's special tokens change the text's own tokens".into()))?;
        Ok(Seq2Seq { source_prefix: wrapped[..at].to_vec(), source_suffix: wrapped[at + plain.len()..].to_vec() })
    }

    fn len(&self) -> usize {
        self.source_prefix.len() + self.source_suffix.len()
    }
}

/// Encodes mapped rows with one template, length limit and EOS id.
pub struct Encoder<'t> {
    tokenizer: &'t Tokenizer,
    before_source: Vec<u32>,
    between: Vec<u32>,
    template: PromptTemplate,
    max_len: usize,
    eos_id: u32,
    seq2seq: Option<Seq2Seq>,
    answer_room: Option<usize>,
}

impl<'t> Encoder<'t> {
    pub fn new(tokenizer: &'t Tokenizer, template: &PromptTemplate, max_len: usize, eos_id: u32) -> Result<Encoder<'t>, DataError> {
        let before_source = encode(tokenizer, &template.before_source)?;
        let between = encode(tokenizer, &template.between)?;
        let fixed = before_source.len() + between.len();
        if max_len <= fixed {
            return Err(DataError::InvalidOption(format!(
                "max_len {max_len} leaves no room for a target after the template's {fixed} tokens"
            )));
        }
        Ok(Encoder { tokenizer, before_source, between, template: template.clone(), max_len, eos_id, seq2seq: None, answer_room: None })
    }

    /// Encodes for an encoder-decoder model (see [`Seq2Seq`]).
    pub fn with_seq2seq(mut self, seq2seq: Seq2Seq) -> Result<Encoder<'t>, DataError> {
        let fixed = self.before_source.len() + self.between.len() + seq2seq.len();
        if self.max_len < fixed {
            return Err(DataError::InvalidOption(format!("max_len {} is shorter than the source's {fixed} fixed tokens", self.max_len)));
        }
        self.seq2seq = Some(seq2seq);
        Ok(self)
    }

    /// Encodes for evaluation (see `LoadOptions::answer_room`): prompts leave `room` tokens of
    /// `max_len` for the answer. An encoder-decoder model's prompt has `max_len` of its own.
    pub fn with_answer_room(mut self, room: usize) -> Result<Encoder<'t>, DataError> {
        let fixed = self.before_source.len() + self.between.len();
        if self.seq2seq.is_none() && (room == 0 || room >= self.max_len.saturating_sub(fixed)) {
            return Err(DataError::InvalidOption(format!(
                "max_len {} leaves no room for {room} new tokens after the template's {fixed} tokens",
                self.max_len
            )));
        }
        self.answer_room = Some(room);
        Ok(self)
    }

    /// Cuts the source's tail so the whole example fits `max_len`; only when the target and EOS
    /// alone do not fit is the source dropped and the target's tail cut (without EOS, since
    /// the text does not end there). Rows are never dropped.
    pub fn encode(&self, row: &MappedRow) -> Result<Example, DataError> {
        let source = encode(self.tokenizer, &row.source)?;
        let fixed = self.before_source.len() + self.between.len();
        let mut target = match &row.target {
            Some(text) => {
                let t = &self.template;
                let text = format!("{}{text}{}", t.target_prefix, t.after_target);
                let mut ids = encode(self.tokenizer, &text)?;
                ids.push(self.eos_id);
                ids
            }
            None => Vec::new(),
        };
        if let Some(s2s) = &self.seq2seq {
            return Ok(self.encode_seq2seq(s2s, row, source, target));
        }
        let untruncated_len = fixed + source.len() + target.len();
        // Room for the answer: the whole target in training, a fixed share in evaluation.
        let answer = self.answer_room.unwrap_or(target.len());
        let target_fits = answer <= self.max_len.saturating_sub(fixed) && target.len() <= answer;
        let source_room = self.max_len.saturating_sub(fixed.saturating_add(answer));
        let kept_source = source.len().min(source_room);
        if !target_fits {
            target.truncate(self.max_len.saturating_sub(fixed + kept_source).min(answer));
        }

        let mut input_ids = Vec::with_capacity(fixed + kept_source + target.len());
        input_ids.extend_from_slice(&self.before_source);
        input_ids.extend_from_slice(&source[..kept_source]);
        input_ids.extend_from_slice(&self.between);
        let prompt_len = input_ids.len();
        input_ids.extend_from_slice(&target);
        Ok(Example {
            input_ids,
            prompt_len,
            references: row.references.clone(),
            at: row.at,
            untruncated_len,
            source_truncated: kept_source < source.len(),
            target_truncated: !target_fits,
        })
    }
}

impl Encoder<'_> {
    /// The prompt (source, template text and the tokenizer's special tokens) cut to `max_len`, then
    /// the target cut to `max_len` on its own (without EOS when cut).
    fn encode_seq2seq(&self, s2s: &Seq2Seq, row: &MappedRow, source: Vec<u32>, mut target: Vec<u32>) -> Example {
        let fixed = s2s.len() + self.before_source.len() + self.between.len();
        let kept_source = source.len().min(self.max_len - fixed);
        let untruncated_len = fixed + source.len() + target.len();
        let target_truncated = target.len() > self.max_len;
        target.truncate(self.max_len);
        let prompt: Vec<u32> = [&s2s.source_prefix, &self.before_source, &source[..kept_source], &self.between, &s2s.source_suffix]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let prompt_len = prompt.len();
        Example {
            input_ids: prompt.into_iter().chain(target).collect(),
            prompt_len,
            references: row.references.clone(),
            at: row.at,
            untruncated_len,
            source_truncated: kept_source < source.len(),
            target_truncated,
        }
    }
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, DataError> {
    let encoding = tokenizer.encode(text, false).map_err(|e| DataError::Tokenizer(e.to_string()))?;
    Ok(encoding.get_ids().to_vec())
}
