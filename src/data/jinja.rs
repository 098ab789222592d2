//! A model's own chat template (the Jinja text in tokenizer_config.json or GGUF metadata), rendered
//! as transformers' `apply_chat_template(..., add_generation_prompt=True)` does.

use minijinja::{Environment, Error, ErrorKind, context};

use super::chat::{ChatMessage, ChatTemplate};

pub struct JinjaChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl JinjaChatTemplate {
    /// Compiles `source` and renders a probe conversation, so a template this engine cannot
    /// render is refused here (with the reason) rather than during training.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        // Templates call these Python-side helpers.
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> { Err(Error::new(ErrorKind::InvalidOperation, msg)) });
        env.add_template_owned("chat", source.to_owned()).map_err(|e| format!("cannot parse the chat template: {e}"))?;
        let template = Self { env, bos_token: bos_token.to_owned(), eos_token: eos_token.to_owned() };
        template.render(&[ChatMessage::new("user", "hi")])?;
        Ok(template)
    }

    fn render(&self, history: &[ChatMessage]) -> Result<String, String> {
        let messages: Vec<_> = history.iter().map(|m| context! { role => &m.role, content => &m.content }).collect();
        let template = self.env.get_template("chat").map_err(|e| e.to_string())?;
        template
            .render(context! { messages, add_generation_prompt => true, bos_token => &self.bos_token, eos_token => &self.eos_token })
            .map_err(|e| format!("cannot render the chat template: {e}"))
    }
}

impl ChatTemplate for JinjaChatTemplate {
    /// Falls back to ChatML for a conversation the template rejects (it rendered the probe, so
    /// this is a template-specific rule such as strict role alternation).
    fn render_prompt(&self, history: &[ChatMessage]) -> String {
        self.render(history).unwrap_or_else(|e| {
            tracing::warn!("{e}; using ChatML for this conversation");
            super::chat::ChatMl.render_prompt(history)
        })
    }
}
