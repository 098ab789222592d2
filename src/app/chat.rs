//! Chat tab: talk to the loaded model with its own chat template, replies streamed as they are
//! generated, and (once training ran) the base model's reply to the same message beside it.

use eframe::egui;

use super::StudioApp;
use super::widgets::{displayable, number};
use super::worker::{ChatSide, Command, EVALUATING};
use crate::data::ChatMessage;

#[derive(Default)]
pub struct ChatView {
    turns: Vec<Turn>,
    message: String,
}

/// One user message and the replies to it.
struct Turn {
    user: String,
    tuned: String,
    /// Only once training replaced the loaded model: the model as loaded.
    base: Option<String>,
}

impl ChatView {
    /// A reply so far, from the worker.
    pub fn on_text(&mut self, side: ChatSide, text: String) {
        let Some(turn) = self.turns.last_mut() else { return };
        match side {
            ChatSide::Tuned => turn.tuned = text,
            ChatSide::Base => turn.base = Some(text),
        }
    }

    /// The whole replies: they replace what streaming showed.
    pub fn finished(&mut self, tuned: String, base: Option<String>) {
        if let Some(turn) = self.turns.last_mut() {
            turn.tuned = tuned;
            turn.base = base.or(turn.base.take());
        }
    }

    /// A different model makes the conversation so far meaningless to it.
    pub fn clear(&mut self) {
        self.turns.clear();
    }

    /// Each side's own history: its replies to the earlier messages, then the new message. Before
    /// training the loaded model was the base, so its replies are the base model's too.
    fn histories(&self, system: &str, message: &str) -> (Vec<ChatMessage>, Vec<ChatMessage>) {
        let start: Vec<ChatMessage> = (!system.trim().is_empty()).then(|| ChatMessage::new("system", system.trim())).into_iter().collect();
        let (mut tuned, mut base) = (start.clone(), start);
        for turn in &self.turns {
            tuned.extend([ChatMessage::new("user", &turn.user), ChatMessage::new("assistant", &turn.tuned)]);
            base.extend([ChatMessage::new("user", &turn.user), ChatMessage::new("assistant", turn.base.as_deref().unwrap_or(&turn.tuned))]);
        }
        tuned.push(ChatMessage::new("user", message));
        base.push(ChatMessage::new("user", message));
        (tuned, base)
    }
}

pub fn show(app: &mut StudioApp, ui: &mut egui::Ui) {
    let Some(summary) = &app.model.summary else {
        ui.label("Load a model first (after training, you chat with the fine-tuned weights, beside the model as loaded).");
        return;
    };
    ui.label(if summary.has_chat_template && !summary.encoder_decoder {
        "The conversation goes to the model through its own chat template."
    } else {
        "This model has no chat template: each message goes to it alone, as a prompt."
    });
    let sampling = &mut app.settings.chat;
    ui.horizontal(|ui| {
        let name = ui.label("Temperature");
        ui.add(egui::Slider::new(&mut sampling.temperature, 0.0..=2.0).step_by(0.05))
            .labelled_by(name.id)
            .on_hover_text("0 decodes greedily: the same reply every time");
        let name = ui.label("Top-p");
        ui.add(egui::Slider::new(&mut sampling.top_p, 0.05..=1.0).step_by(0.05)).labelled_by(name.id);
    });
    ui.horizontal(|ui| {
        let name = ui.label("Repetition penalty");
        ui.add(egui::Slider::new(&mut sampling.repetition_penalty, 1.0..=2.0).step_by(0.05)).labelled_by(name.id);
        number(ui, "Reply tokens at most", &mut sampling.max_new_tokens, 1..=4096, 1.0);
        number(ui, "Seed", &mut sampling.seed, 0..=u64::MAX, 1.0);
    });
    ui.horizontal(|ui| {
        let name = ui.label("System message");
        ui.add(egui::TextEdit::singleline(&mut app.settings.chat_system).desired_width(f32::INFINITY).hint_text("optional"))
            .labelled_by(name.id);
    });
    ui.separator();
    conversation(ui, &app.chat.turns);
    ui.separator();
    let name = ui.label("Message");
    let field = ui.add(egui::TextEdit::multiline(&mut app.chat.message).desired_rows(2).desired_width(f32::INFINITY)).labelled_by(name.id);
    // Enter sends, Shift+Enter starts a new line (as chat apps do).
    let enter = field.has_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter) && !i.modifiers.shift);
    let idle = app.worker.busy().is_none();
    let chatting = app.worker.is_busy_with(super::worker::CHATTING);
    ui.horizontal(|ui| {
        let ready = idle && !app.chat.message.trim().is_empty();
        if ui.add_enabled(ready, egui::Button::new("Send")).clicked() || (ready && enter) {
            send(app);
        }
        if ui.add_enabled(chatting, egui::Button::new("Stop")).clicked() {
            app.worker.control.request_cancel();
        }
        if ui.add_enabled(idle && !app.chat.turns.is_empty(), egui::Button::new("Clear conversation")).clicked() {
            app.chat.clear();
        }
        if app.worker.is_busy_with(EVALUATING) {
            ui.label("(waiting for the evaluation to end)");
        }
    });
}

fn send(app: &mut StudioApp) {
    let message = app.chat.message.trim().trim_end_matches('\n').to_string();
    let (tuned, base) = app.chat.histories(&app.settings.chat_system, &message);
    app.chat.turns.push(Turn { user: message, tuned: String::new(), base: None });
    app.chat.message.clear();
    app.worker.send(Command::Chat { tuned, base, sampling: app.settings.chat });
}

fn conversation(ui: &mut egui::Ui, turns: &[Turn]) {
    let beside = turns.iter().any(|t| t.base.is_some());
    for turn in turns {
        ui.label(egui::RichText::new(format!("You: {}", displayable(&turn.user))).strong());
        if beside {
            ui.columns(2, |columns| {
                let sides = [("Fine-tuned", turn.tuned.as_str()), ("Base (as loaded)", turn.base.as_deref().unwrap_or(""))];
                for (column, (name, text)) in columns.iter_mut().zip(sides) {
                    // Columns justify their text; a reply reads better ragged.
                    column.with_layout(egui::Layout::top_down(egui::Align::Min), |ui| {
                        ui.label(name);
                        reply(ui, text);
                    });
                }
            });
        } else {
            reply(ui, &turn.tuned);
        }
        ui.add_space(6.0);
    }
}

fn reply(ui: &mut egui::Ui, text: &str) {
    ui.add(egui::Label::new(egui::RichText::new(format!("Assistant: {}", displayable(text))).monospace()).wrap());
}
