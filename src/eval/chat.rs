//! A conversation with a model: the prompt its own chat template makes of the history, and the
//! reply generated token by token, so that a window can show it as it grows and stop it.

use serde::{Deserialize, Serialize};

use super::generate::{GenerateOptions, Strategy, generate_streaming};
use crate::data::{ChatMessage, ChatTemplate};
use crate::error::{Error, Result};
use crate::io::LoadedModel;

/// How replies are drawn. The defaults are those of the local chat apps people use (LM Studio,
/// Ollama): sampling at 0.8 with top-p 0.95 and a mild repetition penalty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// 0: greedy decoding (the same reply every time).
    pub temperature: f32,
    pub top_p: f32,
    /// 1.0: off.
    pub repetition_penalty: f32,
    pub max_new_tokens: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 0.8, top_p: 0.95, repetition_penalty: 1.1, max_new_tokens: 256, seed: 0 }
    }
}

impl Sampling {
    fn options(&self, eos_token_ids: Vec<u32>) -> GenerateOptions {
        let strategy = if self.temperature > 0.0 {
            Strategy::Sample { temperature: self.temperature, top_p: self.top_p, seed: self.seed }
        } else {
            Strategy::Greedy
        };
        GenerateOptions {
            strategy,
            max_new_tokens: self.max_new_tokens,
            repetition_penalty: self.repetition_penalty,
            eos_token_ids,
            use_cache: true,
        }
    }
}

/// How a history became the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// Rendered by the model's own chat template, every turn included.
    Template,
    /// The last user message alone: the model has no chat template (or, like T5, reads its input
    /// through an encoder and answers it).
    LastMessage,
}

/// How `loaded` reads a conversation (see [`PromptKind`]).
pub fn prompt_kind(loaded: &LoadedModel) -> PromptKind {
    match template(loaded) {
        Some(_) => PromptKind::Template,
        None => PromptKind::LastMessage,
    }
}

fn template(loaded: &LoadedModel) -> Option<crate::data::JinjaChatTemplate> {
    if loaded.model.is_encoder_decoder() { None } else { loaded.chat_renderer() }
}

/// The token ids of `history` (system, user and assistant turns, ending with the user message to
/// answer), leaving room for `reply_tokens` in the model's context: the oldest exchanges are
/// dropped until it fits (the system message stays); an error when the last message alone does
/// not fit.
pub fn prompt_ids(loaded: &LoadedModel, history: &[ChatMessage], reply_tokens: usize) -> Result<Vec<u32>> {
    let last = history
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or_else(|| Error::Other("the conversation has no user message to answer".into()))?;
    let limit = loaded.model.position_limit().unwrap_or(usize::MAX);
    let fits = |ids: &Vec<u32>| ids.len() + reply_tokens.min(limit / 2) <= limit;
    let ids = match template(loaded) {
        Some(template) => {
            let (system, turns): (Vec<&ChatMessage>, Vec<&ChatMessage>) = history[..=last].iter().partition(|m| m.role == "system");
            let mut start = 0;
            loop {
                let kept: Vec<ChatMessage> = system.iter().chain(&turns[start..]).map(|m| (*m).clone()).collect();
                // The template already writes the BOS token where the model wants one.
                let text = template.render_prompt(&kept);
                let ids = loaded
                    .tokenizer
                    .encode(text, false)
                    .map_err(|e| Error::Other(format!("cannot tokenize the conversation: {e}")))?
                    .get_ids()
                    .to_vec();
                // Drop the oldest exchange: up to the next user message after the first.
                match turns[start + 1..].iter().position(|m| m.role == "user") {
                    Some(next) if !fits(&ids) => start += 1 + next,
                    _ => break ids,
                }
            }
        }
        None => loaded.prompt_ids(&history[last].content)?,
    };
    if !fits(&ids) {
        return Err(Error::Other(format!(
            "the message has {} tokens and the model's context holds {limit}: shorten it to leave room for the reply",
            ids.len()
        )));
    }
    Ok(ids)
}

/// The model's reply to `history`. `on_text` gets the reply so far after every token and returns
/// false to stop it there; the reply up to that point is returned.
pub fn reply(loaded: &LoadedModel, history: &[ChatMessage], sampling: &Sampling, on_text: &mut dyn FnMut(&str) -> bool) -> Result<String> {
    let prompt = prompt_ids(loaded, history, sampling.max_new_tokens)?;
    let decode = |tokens: &[u32]| loaded.tokenizer.decode(tokens, true).map_err(|e| Error::Other(format!("cannot decode the reply: {e}")));
    let mut failed = None;
    let tokens =
        generate_streaming(&loaded.model, &prompt, &sampling.options(loaded.eos_token_ids()), &mut |so_far| match decode(so_far) {
            Ok(text) => on_text(&text),
            Err(e) => {
                failed = Some(e);
                false
            }
        });
    match failed {
        Some(e) => Err(e),
        None => decode(&tokens),
    }
}
