//! Conversations (ShareGPT `from`/`value` or OpenAI-style `role`/`content` lists) and the chat
//! template that renders them as a prompt. The caller supplies the model's own template;
//! ChatML is the fallback.

use serde_json::Value;

use super::format::json_kind;

/// One turn, with the role normalised to `system`, `user` or `assistant` (other roles such as
/// `tool` are kept as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// Renders a conversation so that the model's reply comes next.
pub trait ChatTemplate {
    /// `history` ends before the assistant turn to be learned; the result must end with
    /// whatever the model expects right before an assistant reply.
    fn render_prompt(&self, history: &[ChatMessage]) -> String;
}

impl<F: Fn(&[ChatMessage]) -> String> ChatTemplate for F {
    fn render_prompt(&self, history: &[ChatMessage]) -> String {
        self(history)
    }
}

/// `<|im_start|>role\ncontent<|im_end|>\n` per turn, then `<|im_start|>assistant\n`.
/// The reply's end is the EOS the prompt encoder appends (use `<|im_end|>`'s id for ChatML models).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatMl;

impl ChatTemplate for ChatMl {
    fn render_prompt(&self, history: &[ChatMessage]) -> String {
        let mut text = String::new();
        for m in history {
            text.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
        }
        text.push_str("<|im_start|>assistant\n");
        text
    }
}

/// The prompt (history rendered) and the last assistant reply of a conversation.
#[derive(Debug)]
pub struct ChatPair {
    pub prompt: String,
    pub reply: String,
}

/// Splits a conversation at its last assistant turn; later turns are dropped.
/// Errors are a short description of what is wrong with the list.
pub fn split_conversation(value: &Value, template: &dyn ChatTemplate) -> Result<ChatPair, String> {
    let Value::Array(turns) = value else {
        return Err(format!("is {}, expected a list of messages", json_kind(value)));
    };
    let messages = turns
        .iter()
        .enumerate()
        .map(|(i, turn)| parse_turn(turn).map_err(|e| format!("message {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let last = messages.iter().rposition(|m| m.role == "assistant").ok_or_else(|| "has no assistant turn to learn".to_owned())?;
    Ok(ChatPair { prompt: template.render_prompt(&messages[..last]), reply: messages[last].content.trim().to_owned() })
}

fn parse_turn(turn: &Value) -> Result<ChatMessage, String> {
    let Value::Object(fields) = turn else {
        return Err(format!("is {}, expected an object", json_kind(turn)));
    };
    let text = |keys: [&str; 2]| -> Result<String, String> {
        let value = keys.iter().find_map(|k| fields.get(*k)).ok_or_else(|| format!("has neither `{}` nor `{}`", keys[0], keys[1]))?;
        match value {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("`{}` is {}, expected text", keys[0], json_kind(other))),
        }
    };
    let role = match text(["role", "from"])?.as_str() {
        "human" | "user" => "user".to_owned(),
        "gpt" | "assistant" | "model" | "chatgpt" | "bard" => "assistant".to_owned(),
        other => other.to_owned(),
    };
    Ok(ChatMessage { role, content: text(["content", "value"])? })
}
