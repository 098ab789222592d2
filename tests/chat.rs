//! Conversations rendered with the model's own Jinja chat template, as transformers does.

mod common;

use greentrainer::data::{ChatMessage, ChatTemplate, JinjaChatTemplate};

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage { role: role.into(), content: content.into() }
}

#[test]
fn a_jinja_template_renders_with_the_generation_prompt() {
    let source = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m.content | trim }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}";
    let t = JinjaChatTemplate::new(source, "<s>", "</s>").unwrap();
    assert_eq!(t.render_prompt(&[msg("system", "Be brief."), msg("user", " Hi ")]), "<s>[system] Be brief.\n[user] Hi\n[assistant] ");
}

#[test]
fn templates_that_cannot_render_are_refused_with_the_reason() {
    let err = JinjaChatTemplate::new("{% if %}", "", "").err().unwrap();
    assert!(err.contains("cannot parse"), "{err}");
    let err = JinjaChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").err().unwrap();
    assert!(err.contains("roles must alternate"), "{err}");
}

#[test]
fn smollm2_renders_conversations_like_its_chatml_template() {
    let Some(path) = common::smollm2_gguf() else { return };
    let loaded = greentrainer::io::load_model(&path, &greentrainer::device::ComputeDevice::cpu().device).unwrap();
    let t = loaded.chat_renderer().expect("SmolLM2 ships a chat template");
    let text = t.render_prompt(&[msg("user", "Summarize this.")]);
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
    assert!(text.ends_with("<|im_start|>user\nSummarize this.<|im_end|>\n<|im_start|>assistant\n"), "{text}");
}
