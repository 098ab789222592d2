//! Conversations rendered with the model's own Jinja chat template, as transformers does, and
//! the Chat tab's engine: the prompt a history makes, and replies streamed token by token.

mod common;

use greentrainer::data::{ChatMessage, ChatTemplate, JinjaChatTemplate};
use greentrainer::device::ComputeDevice;
use greentrainer::eval::chat::{PromptKind, Sampling, prompt_ids, prompt_kind, reply};
use greentrainer::eval::generate::{GenerateOptions, generate, generate_streaming};
use greentrainer::io::{LoadedModel, load_model};

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
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
    let loaded = cpu_model(&path);
    let t = loaded.chat_renderer().expect("SmolLM2 ships a chat template");
    let text = t.render_prompt(&[msg("user", "Summarize this.")]);
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
    assert!(text.ends_with("<|im_start|>user\nSummarize this.<|im_end|>\n<|im_start|>assistant\n"), "{text}");
}

fn cpu_model(path: &std::path::Path) -> LoadedModel {
    load_model(path, &ComputeDevice::cpu().device).unwrap()
}

#[test]
fn a_conversation_is_the_template_of_every_turn_and_old_turns_make_room_for_the_reply() {
    let Some(path) = common::smollm2_gguf() else { return };
    let loaded = cpu_model(&path);
    assert_eq!(prompt_kind(&loaded), PromptKind::Template);
    let t = loaded.chat_renderer().unwrap();
    let encode = |history: &[ChatMessage]| loaded.tokenizer.encode(t.render_prompt(history), false).unwrap().get_ids().to_vec();
    let short = [msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Name a colour.")];
    assert_eq!(prompt_ids(&loaded, &short, 64).unwrap(), encode(&short));

    // An old exchange of ~6000 tokens leaves no room for 3000 reply tokens in SmolLM2's 8192:
    // it goes, the system message and the last exchange stay.
    let long = "word ".repeat(6000);
    let history = [
        msg("system", "Be brief."),
        msg("user", &long),
        msg("assistant", "Ok."),
        msg("user", "Hi"),
        msg("assistant", "Hello!"),
        msg("user", "Name a colour."),
    ];
    assert!(encode(&history).len() + 3000 > 8192 && encode(&history).len() + 100 <= 8192, "{}", encode(&history).len());
    let kept = [msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Name a colour.")];
    assert_eq!(prompt_ids(&loaded, &history, 3000).unwrap(), encode(&kept));
    assert_eq!(prompt_ids(&loaded, &history, 100).unwrap(), encode(&history), "it fits with a short reply");

    // The message to answer can never be dropped.
    let err = prompt_ids(&loaded, &[msg("user", &"word ".repeat(9000))], 64).unwrap_err().to_string();
    assert!(err.contains("shorten it") && err.contains("8192"), "{err}");
}

#[test]
fn replies_stream_token_by_token_and_stop_when_asked() {
    let loaded = cpu_model(&common::fixture("tiny-llama"));
    // No chat template: the last message alone is the prompt.
    assert_eq!(prompt_kind(&loaded), PromptKind::LastMessage);
    let history = [msg("user", "an earlier message"), msg("assistant", "its reply"), msg("user", "hello there")];
    let prompt = loaded.prompt_ids("hello there").unwrap();
    assert_eq!(prompt_ids(&loaded, &history, 8).unwrap(), prompt);

    let opts = GenerateOptions::greedy(8);
    let whole = generate(&loaded.model, &prompt, &opts);
    assert_eq!(whole.len(), 8, "the tiny model has no EOS to stop at");
    let mut seen: Vec<Vec<u32>> = Vec::new();
    let streamed = generate_streaming(&loaded.model, &prompt, &opts, &mut |so_far| {
        seen.push(so_far.to_vec());
        true
    });
    assert_eq!(streamed, whole);
    assert_eq!(seen, (1..=8).map(|n| whole[..n].to_vec()).collect::<Vec<_>>(), "each call brings one more token");
    let stopped = generate_streaming(&loaded.model, &prompt, &opts, &mut |so_far| so_far.len() < 3);
    assert_eq!(stopped, whole[..3]);

    // Greedy chat: the reply is those tokens decoded, the last streamed text is the reply, and
    // Stop keeps what was said so far.
    let greedy = Sampling { temperature: 0.0, repetition_penalty: 1.0, max_new_tokens: 8, ..Sampling::default() };
    let decoded = |tokens: &[u32]| loaded.tokenizer.decode(tokens, true).unwrap();
    let mut last = String::new();
    let text = reply(&loaded, &history, &greedy, &mut |t| {
        last = t.to_string();
        true
    })
    .unwrap();
    assert_eq!(text, decoded(&whole));
    assert_eq!(last, text);
    let mut calls = 0;
    let cut = reply(&loaded, &history, &greedy, &mut |_| {
        calls += 1;
        calls < 2
    })
    .unwrap();
    assert_eq!(cut, decoded(&whole[..2]));

    let err = reply(&loaded, &[msg("system", "alone")], &greedy, &mut |_| true).unwrap_err().to_string();
    assert!(err.contains("no user message"), "{err}");
}
