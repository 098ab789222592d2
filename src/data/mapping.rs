//! Which fields of a record are the source and the target(s), the presets that guess this from
//! the field names, and the mapping of one record to text.

use std::path::Path;

use serde_json::Value;

use super::chat::{ChatTemplate, split_conversation};
use super::error::{DataError, RowPosition};
use super::format::{RawRecord, json_kind};

/// The known dataset layouts, recognised from field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// `dialogue` / `summary`; the test split has `summary1..3`; the hidden test has no summary.
    DialogSum,
    /// `source` (list of sentences) / `target` (list of TLDRs).
    SciTldr,
    /// `instruction` / `input` / `output`.
    Alpaca,
    /// `conversations`: a list of `{from, value}`.
    ShareGpt,
    /// `messages`: a list of `{role, content}`.
    Messages,
    /// A mapping the caller chose.
    Custom,
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Preset::DialogSum => "DialogSum",
            Preset::SciTldr => "SciTLDR",
            Preset::Alpaca => "Alpaca",
            Preset::ShareGpt => "ShareGPT",
            Preset::Messages => "messages",
            Preset::Custom => "custom",
        })
    }
}

/// How a record becomes a source text and its target(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// A source field (text, or a list of text joined with spaces) and target fields. Each target
    /// field is text or a list of text; all of them, in order, are the evaluation references and
    /// the first is the training target. No target fields: the rows serve prediction only.
    Columns { source: String, targets: Vec<String> },
    /// Source = instruction, plus "\n" + input when the input is not empty; target = output.
    Instruction { instruction: String, input: Option<String>, output: String },
    /// A list of chat turns: the source is the conversation before the last assistant turn,
    /// rendered with the chat template; the target is that turn.
    Chat { messages: String },
}

impl Mapping {
    pub fn columns(source: &str, targets: &[&str]) -> Mapping {
        Mapping::Columns { source: source.to_owned(), targets: targets.iter().map(|t| (*t).to_owned()).collect() }
    }

    pub fn has_target(&self) -> bool {
        !matches!(self, Mapping::Columns { targets, .. } if targets.is_empty())
    }

    pub fn is_chat(&self) -> bool {
        matches!(self, Mapping::Chat { .. })
    }
}

/// Guesses the layout from a record's field names.
pub fn detect_mapping(fields: &[String]) -> Option<(Preset, Mapping)> {
    let has = |name: &str| fields.iter().any(|f| f == name);
    if has("conversations") {
        return Some((Preset::ShareGpt, Mapping::Chat { messages: "conversations".into() }));
    }
    if has("messages") {
        return Some((Preset::Messages, Mapping::Chat { messages: "messages".into() }));
    }
    if has("instruction") && has("output") {
        let input = has("input").then(|| "input".to_owned());
        let mapping = Mapping::Instruction { instruction: "instruction".into(), input, output: "output".into() };
        return Some((Preset::Alpaca, mapping));
    }
    if has("dialogue") {
        let targets = if has("summary") { vec!["summary".to_owned()] } else { numbered(fields, "summary") };
        return Some((Preset::DialogSum, Mapping::Columns { source: "dialogue".into(), targets }));
    }
    if has("source") && has("target") {
        return Some((Preset::SciTldr, Mapping::columns("source", &["target"])));
    }
    None
}

/// Fields named `{stem}1`, `{stem}2`, ... in numeric order.
fn numbered(fields: &[String], stem: &str) -> Vec<String> {
    let mut found: Vec<(u32, &String)> = fields.iter().filter_map(|f| Some((f.strip_prefix(stem)?.parse().ok()?, f))).collect();
    found.sort();
    found.into_iter().map(|(_, f)| f.clone()).collect()
}

/// A record mapped to text: what the prompt encoder and the preview work on.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedRow {
    pub at: RowPosition,
    pub source: String,
    /// The training target; None when the mapping has no target field.
    pub target: Option<String>,
    /// Every reference summary, for evaluation; `references[0]` is the training target.
    pub references: Vec<String>,
}

pub(crate) fn map_record(record: &RawRecord, mapping: &Mapping, chat: &dyn ChatTemplate, path: &Path) -> Result<MappedRow, DataError> {
    let field = |name: &str| {
        record.fields.get(name).ok_or_else(|| DataError::MissingField {
            path: path.to_path_buf(),
            at: record.at,
            field: name.to_owned(),
            available: record.field_names(),
        })
    };
    let bad =
        |name: &str, problem: String| DataError::BadField { path: path.to_path_buf(), at: record.at, field: name.to_owned(), problem };
    let (source, references) = match mapping {
        Mapping::Columns { source, targets } => {
            let text = source_text(field(source)?).map_err(|p| bad(source, p))?;
            let mut references = Vec::new();
            for name in targets {
                references.extend(target_texts(field(name)?).map_err(|p| bad(name, p))?);
            }
            (text, references)
        }
        Mapping::Instruction { instruction, input, output } => {
            let mut text = source_text(field(instruction)?).map_err(|p| bad(instruction, p))?;
            // A missing input field means no input, as in Alpaca rows written without one.
            if let Some(name) = input.as_deref()
                && let Some(value) = record.fields.get(name)
            {
                let extra = source_text(value).map_err(|p| bad(name, p))?;
                if !extra.is_empty() {
                    text = format!("{text}\n{extra}");
                }
            }
            let target = target_texts(field(output)?).map_err(|p| bad(output, p))?;
            (text, target)
        }
        Mapping::Chat { messages } => {
            let pair = split_conversation(field(messages)?, chat).map_err(|p| bad(messages, p))?;
            if pair.reply.is_empty() {
                return Err(bad(messages, "ends with an empty assistant turn".into()));
            }
            (pair.prompt, vec![pair.reply])
        }
    };
    Ok(MappedRow { at: record.at, source, target: references.first().cloned(), references })
}

/// Text, or a list of text joined with single spaces (SciTLDR's sentences).
fn source_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.trim().to_owned()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Array(items) => {
            let parts = items.iter().map(text_item).collect::<Result<Vec<_>, _>>()?;
            Ok(parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" "))
        }
        other => Err(format!("is {}, expected text or a list of text", json_kind(other))),
    }
}

/// One target or a list of them; none may be empty.
fn target_texts(value: &Value) -> Result<Vec<String>, String> {
    let texts = match value {
        Value::String(s) => vec![s.trim().to_owned()],
        Value::Array(items) if items.is_empty() => return Err("is an empty list".into()),
        Value::Array(items) => items.iter().map(|v| text_item(v).map(|s| s.trim().to_owned())).collect::<Result<_, _>>()?,
        other => {
            return Err(format!("is {}, expected text or a list of text", json_kind(other)));
        }
    };
    if texts.iter().any(String::is_empty) {
        return Err("holds an empty target".into());
    }
    Ok(texts)
}

fn text_item(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("holds {} where text was expected", json_kind(other))),
    }
}
