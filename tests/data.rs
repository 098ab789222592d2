//! The data module against the real DialogSum and SciTLDR files in tests/data and small files
//! written here in every format.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use greentrainer::data::*;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

const EOS: u32 = 0; // <|endoftext|> in the fixture tokenizer
const PAD: u32 = 1; // <pad>

/// A file under tests/ (the fixtures and dataset rows the tests read, see tests/data/README.md).
fn test_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(rel)
}

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| Tokenizer::from_file(test_file("fixtures/tokenizer/tokenizer.json")).expect("fixture tokenizer"))
}

fn opts(max_len: usize) -> LoadOptions {
    LoadOptions::new(max_len, EOS)
}

fn load(path: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    load_dataset(path, tokenizer(), opts)
}

fn ids(text: &str) -> Vec<u32> {
    tokenizer().encode(text, false).unwrap().get_ids().to_vec()
}

fn decode(ids: &[u32]) -> String {
    tokenizer().decode(ids, false).unwrap()
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The first `n` records of a JSONL file, as JSON values.
fn first_records(path: &Path, n: usize) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().take(n).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn jsonl(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// What must agree between formats (the position differs: lines vs rows).
fn essence(dataset: &Dataset) -> Vec<(Vec<u32>, usize, Vec<String>)> {
    dataset.examples.iter().map(|e| (e.input_ids.clone(), e.prompt_len, e.references.clone())).collect()
}

enum Column {
    Text(&'static str, Vec<String>),
    List(&'static str, Vec<Vec<String>>),
}

/// Writes UTF8 and LIST<UTF8> columns with the parquet crate's low-level writer.
fn write_parquet(path: &Path, columns: &[Column]) {
    let fields: String = columns
        .iter()
        .map(|c| match c {
            Column::Text(name, _) => format!("REQUIRED BYTE_ARRAY {name} (UTF8);"),
            Column::List(name, _) => {
                format!("REQUIRED GROUP {name} (LIST) {{ REPEATED GROUP list {{ REQUIRED BYTE_ARRAY element (UTF8); }} }}")
            }
        })
        .collect();
    let schema = Arc::new(parse_message_type(&format!("message rows {{ {fields} }}")).unwrap());
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let mut writer = SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for column in columns {
        let mut out = group.next_column().unwrap().unwrap();
        match column {
            Column::Text(_, values) => {
                let values: Vec<ByteArray> = values.iter().map(|s| ByteArray::from(s.as_str())).collect();
                out.typed::<ByteArrayType>().write_batch(&values, None, None).unwrap();
            }
            Column::List(_, lists) => {
                let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
                for list in lists {
                    for (i, s) in list.iter().enumerate() {
                        values.push(ByteArray::from(s.as_str()));
                        def.push(1);
                        rep.push(i16::from(i > 0));
                    }
                }
                out.typed::<ByteArrayType>().write_batch(&values, Some(&def), Some(&rep)).unwrap();
            }
        }
        out.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

fn texts(records: &[Value], field: &str) -> Vec<String> {
    records.iter().map(|r| r[field].as_str().unwrap().to_owned()).collect()
}

fn list(record: &Value, field: &str) -> Vec<String> {
    record[field].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

fn lists(records: &[Value], field: &str) -> Vec<Vec<String>> {
    records.iter().map(|r| list(r, field)).collect()
}

// ---- the datasets in tests/data ----

#[test]
fn dialogsum_splits_load_with_auto_detection() {
    for (file, rows, refs_per_row) in [("train", 12_460, 1), ("dev", 500, 1), ("test", 500, 3)] {
        let path = test_file(&format!("data/dialogsum/dialogsum.{file}.jsonl"));
        let data = load(&path, &opts(512)).unwrap();
        let report = &data.report;
        assert_eq!(report.info.format, DataFormat::Jsonl);
        assert_eq!(report.info.preset, Preset::DialogSum, "{file}");
        assert_eq!(report.counts.rows, rows, "{file}");
        assert_eq!(data.examples.len(), rows);
        assert_eq!(report.counts.skipped, 0);
        assert!(data.examples.iter().all(|e| e.references.len() == refs_per_row), "{file}");
        assert!(data.examples.iter().all(|e| e.seq_len() <= 512 && e.seq_len() > e.prompt_len));
        data.require_targets().unwrap();
    }
    let test = load(&test_file("data/dialogsum/dialogsum.test.jsonl"), &opts(512)).unwrap();
    assert_eq!(test.report.info.mapping, Mapping::columns("dialogue", &["summary1", "summary2", "summary3"]));
    let first = &first_records(&test_file("data/dialogsum/dialogsum.test.jsonl"), 1)[0];
    let summaries: Vec<&str> = ["summary1", "summary2", "summary3"].map(|f| first[f].as_str().unwrap().trim()).into();
    assert_eq!(test.examples[0].references, summaries);
}

#[test]
fn dialogsum_hidden_test_dialogues_load_as_prediction_only() {
    let data = load(&test_file("data/dialogsum/dialogsum.hiddentest.dialogue.jsonl"), &opts(512)).unwrap();
    assert_eq!(data.examples.len(), 100);
    assert_eq!(data.report.info.preset, Preset::DialogSum);
    assert!(!data.report.info.mapping.has_target());
    for e in &data.examples {
        assert_eq!(e.prompt_len, e.seq_len(), "prompt only");
        assert!(e.references.is_empty());
        assert!(e.labels().iter().all(|&l| l == IGNORE_INDEX));
        assert!(decode(e.prompt_ids()).ends_with(" TL;DR:"));
    }
    let err = data.require_targets().unwrap_err();
    assert!(matches!(err, DataError::NoTargets { .. }), "{err}");
    assert!(err.to_string().contains("dialogue, fname"), "{err}");
}

#[test]
fn dialogsum_hidden_test_topics_have_no_source_field() {
    let err = load(&test_file("data/dialogsum/dialogsum.hiddentest.topic.jsonl"), &opts(512)).unwrap_err();
    match &err {
        DataError::UnknownLayout { fields, .. } => assert_eq!(fields, &["fname", "topic"]),
        other => panic!("expected UnknownLayout, got {other}"),
    }
    assert!(err.to_string().contains("[fname, topic]"), "{err}");
}

#[test]
fn scitldr_abstract_splits_load_with_auto_detection() {
    let expected = [
        ("train", 1_992, BTreeMap::from([(1, 1_992)])),
        ("dev", 619, BTreeMap::from([(1, 94), (2, 237), (3, 267), (4, 21)])),
        ("test", 618, BTreeMap::from([(2, 83), (3, 339), (4, 196)])),
    ];
    for (file, rows, refs_histogram) in expected {
        let path = test_file(&format!("data/scitldr/SciTLDR-A/{file}.jsonl"));
        let data = load(&path, &opts(512)).unwrap();
        assert_eq!(data.report.info.preset, Preset::SciTldr);
        assert_eq!(data.report.counts.rows, rows, "{file}");
        let mut found = BTreeMap::new();
        for e in &data.examples {
            *found.entry(e.references.len()).or_insert(0) += 1;
        }
        assert_eq!(found, refs_histogram, "{file}");
    }
}

#[test]
fn scitldr_source_is_sentences_joined_and_target_is_the_first_tldr() {
    let path = test_file("data/scitldr/SciTLDR-A/dev.jsonl");
    let record = &first_records(&path, 1)[0];
    let mut rows = RowStream::open(&path, &opts(512)).unwrap();
    let row = rows.next().unwrap().unwrap();
    let (sentences, targets) = (list(record, "source"), list(record, "target"));
    assert_eq!(row.source, sentences.iter().map(|s| s.trim()).collect::<Vec<_>>().join(" "));
    assert_eq!(row.target.as_deref(), Some(targets[0].trim()));
    assert_eq!(row.references.len(), targets.len());
}

// ---- formats ----

#[test]
fn json_csv_and_parquet_give_the_same_examples_as_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = first_records(&test_file("data/dialogsum/dialogsum.train.jsonl"), 6);
    // Brackets, commas, quotes and backslashes inside strings must not confuse any reader.
    records.push(json!({
        "fname": "tricky", "topic": "t",
        "dialogue": "#Person1#: [a, {b}] \"quoted\", back\\slash\\\n#Person2#: ok ]}",
        "summary": "He says \"ok\", [sic]."
    }));
    let reference = load(&write(dir.path(), "rows.jsonl", jsonl(&records)), &opts(512)).unwrap();
    assert_eq!(reference.examples.len(), 7);

    let array = serde_json::to_string_pretty(&records).unwrap();
    let from_json = load(&write(dir.path(), "rows.json", array), &opts(512)).unwrap();
    assert_eq!(from_json.report.info.format, DataFormat::JsonArray);

    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["fname", "dialogue", "summary", "topic"]).unwrap();
    for r in &records {
        csv.write_record(["fname", "dialogue", "summary", "topic"].map(|f| r[f].as_str().unwrap())).unwrap();
    }
    let from_csv = load(&write(dir.path(), "rows.csv", csv.into_inner().unwrap()), &opts(512)).unwrap();
    assert_eq!(from_csv.report.info.format, DataFormat::Csv);

    let parquet = dir.path().join("rows.parquet");
    write_parquet(
        &parquet,
        &[
            Column::Text("fname", texts(&records, "fname")),
            Column::Text("dialogue", texts(&records, "dialogue")),
            Column::Text("summary", texts(&records, "summary")),
        ],
    );
    let from_parquet = load(&parquet, &opts(512)).unwrap();
    assert_eq!(from_parquet.report.info.format, DataFormat::Parquet);
    assert_eq!(from_parquet.examples[2].at, RowPosition::Row(3));

    for other in [&from_json, &from_csv, &from_parquet] {
        assert_eq!(other.report.info.preset, Preset::DialogSum);
        assert_eq!(essence(other), essence(&reference), "{}", other.report.info.format);
    }
}

#[test]
fn a_whole_file_as_a_json_array_matches_its_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = test_file("data/dialogsum/dialogsum.dev.jsonl");
    let records = first_records(&path, usize::MAX);
    let array = write(dir.path(), "dev.json", serde_json::to_string_pretty(&records).unwrap());
    let (from_array, from_lines) = (load(&array, &opts(512)).unwrap(), load(&path, &opts(512)).unwrap());
    assert_eq!(from_array.examples.len(), 500);
    assert_eq!(essence(&from_array), essence(&from_lines));
}

#[test]
fn list_columns_read_the_same_from_json_array_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let records = first_records(&test_file("data/scitldr/SciTLDR-A/test.jsonl"), 5);
    let reference = load(&write(dir.path(), "rows.jsonl", jsonl(&records)), &opts(512)).unwrap();
    let from_json = load(&write(dir.path(), "rows.json", serde_json::to_string(&records).unwrap()), &opts(512)).unwrap();
    let parquet = dir.path().join("rows.parquet");
    write_parquet(
        &parquet,
        &[
            Column::List("source", lists(&records, "source")),
            Column::List("target", lists(&records, "target")),
            Column::Text("title", texts(&records, "title")),
        ],
    );
    let from_parquet = load(&parquet, &opts(512)).unwrap();
    assert_eq!(from_parquet.report.info.preset, Preset::SciTldr);
    assert!(reference.examples.iter().all(|e| e.references.len() >= 2));
    assert_eq!(essence(&from_json), essence(&reference));
    assert_eq!(essence(&from_parquet), essence(&reference));
}

#[test]
fn detection_reads_json_lines_named_json_and_skips_a_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "rows.json", "{\"dialogue\": \"a b\", \"summary\": \"c\"}\n");
    assert_eq!(DataFormat::detect(&path).unwrap(), DataFormat::Jsonl);
    assert_eq!(load(&path, &opts(64)).unwrap().examples.len(), 1);

    let bom = "\u{feff}";
    let files = [
        ("bom.jsonl", format!("{bom}{{\"dialogue\": \"a\", \"summary\": \"b\"}}\n")),
        ("bom.json", format!("{bom}[{{\"dialogue\": \"a\", \"summary\": \"b\"}}]")),
        ("bom.csv", format!("{bom}dialogue,summary\na,b\n")),
    ];
    for (name, text) in files {
        let data = load(&write(dir.path(), name, text), &opts(64)).unwrap();
        assert_eq!(data.report.info.fields, ["dialogue", "summary"], "{name}");
    }
}

// ---- prompt, labels and truncation ----

#[test]
fn labels_mask_prompt_and_padding_and_decode_to_the_target_and_eos() {
    let path = test_file("data/dialogsum/dialogsum.dev.jsonl");
    let records = first_records(&path, 2);
    let data = load(&path, &opts(512)).unwrap();
    let (a, b) = (&data.examples[0], &data.examples[1]);
    let batch = pad_batch(&[a, b], PAD);
    assert_eq!((batch.batch, batch.seq), (2, a.seq_len().max(b.seq_len())));
    assert_eq!(batch.real_tokens, a.seq_len() + b.seq_len());

    for (row, (example, record)) in [a, b].into_iter().zip(&records).enumerate() {
        let summary = record["summary"].as_str().unwrap().trim();
        let dialogue = record["dialogue"].as_str().unwrap().trim();
        let span = row * batch.seq..(row + 1) * batch.seq;
        let (ids, mask, labels) = (&batch.input_ids[span.clone()], &batch.attention_mask[span.clone()], &batch.labels[span]);
        for pos in 0..batch.seq {
            let in_target = pos >= example.prompt_len && pos < example.seq_len();
            assert_eq!(labels[pos] == IGNORE_INDEX, !in_target, "row {row} pos {pos}");
            if in_target {
                assert_eq!(labels[pos], i64::from(ids[pos]));
            }
            assert_eq!(mask[pos] == 1, pos < example.seq_len());
            if pos >= example.seq_len() {
                assert_eq!(ids[pos], PAD);
            }
        }
        let learned: Vec<u32> = labels.iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect();
        assert_eq!(decode(&learned), format!(" {summary}<|endoftext|>"));
        assert_eq!(decode(example.prompt_ids()), format!("{dialogue} TL;DR:"));
    }
    let labelled = batch.labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
    assert_eq!(batch.target_tokens, labelled);
}

#[test]
fn source_truncation_keeps_the_whole_target_and_counts_rows() {
    let path = test_file("data/dialogsum/dialogsum.dev.jsonl");
    let max_len = 256;
    let data = load(&path, &opts(max_len)).unwrap();
    let fixed = ids(" TL;DR:").len();
    let mut expected_truncated = 0;
    for (example, record) in data.examples.iter().zip(first_records(&path, 500)) {
        let summary = record["summary"].as_str().unwrap().trim();
        let source_len = ids(record["dialogue"].as_str().unwrap().trim()).len();
        let target_len = ids(&format!(" {summary}")).len() + 1;
        assert_eq!(example.untruncated_len, source_len + fixed + target_len);
        assert!(fixed + target_len <= max_len, "no target in dev is that long");
        if source_len + fixed + target_len > max_len {
            expected_truncated += 1;
            assert!(example.source_truncated);
            assert_eq!(example.seq_len(), max_len);
        }
        assert_eq!(decode(&example.input_ids[example.prompt_len..]), format!(" {summary}<|endoftext|>"));
        assert!(decode(example.prompt_ids()).ends_with(" TL;DR:"));
    }
    assert!(expected_truncated > 100, "the test needs truncated rows: {expected_truncated}");
    assert_eq!(data.report.counts.truncated_source, expected_truncated);
    assert_eq!(data.report.counts.truncated_target, 0);
}

#[test]
fn a_target_longer_than_max_len_loses_its_tail_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(40);
    let rows = jsonl(&[json!({"dialogue": "short dialogue", "summary": long}), json!({"dialogue": "another", "summary": "fits"})]);
    let max_len = 16;
    let data = load(&write(dir.path(), "rows.jsonl", rows), &opts(max_len)).unwrap();
    let cut = &data.examples[0];
    assert!(cut.target_truncated && cut.source_truncated);
    assert_eq!(cut.seq_len(), max_len);
    assert_eq!(cut.prompt_ids(), ids(" TL;DR:").as_slice(), "the source is dropped entirely");
    assert_ne!(cut.input_ids.last(), Some(&EOS), "a cut target does not end");
    assert!(format!(" {}", long.trim()).starts_with(&decode(&cut.input_ids[cut.prompt_len..])));
    assert!(!data.examples[1].target_truncated);
    assert_eq!(data.report.counts.truncated_target, 1);
    assert_eq!(data.report.counts.truncated_source, 1);
    assert_eq!(data.report.counts.rows, 2, "no row is dropped");
}

#[test]
fn max_len_must_leave_room_for_a_target() {
    let err = load(&test_file("data/dialogsum/dialogsum.dev.jsonl"), &opts(2)).unwrap_err();
    assert!(matches!(err, DataError::InvalidOption(_)), "{err}");
}

#[test]
fn a_custom_template_and_mapping_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "rows.jsonl", jsonl(&[json!({"text": "a long story", "gist": "story"})]));
    let mut options = opts(64);
    options.mapping = Some(Mapping::columns("text", &["gist"]));
    options.template = Some(PromptTemplate::parse("Summarize: {source}\nSummary: {target}").unwrap());
    let data = load(&path, &options).unwrap();
    let e = &data.examples[0];
    assert_eq!(data.report.info.preset, Preset::Custom);
    assert_eq!(decode(e.prompt_ids()), "Summarize: a long story\nSummary:");
    assert_eq!(decode(&e.input_ids[e.prompt_len..]), " story<|endoftext|>");
    assert!(PromptTemplate::parse("{target} before {source}").is_err());
    assert!(PromptTemplate::parse("no placeholders").is_err());
}

// ---- presets ----

#[test]
fn alpaca_rows_join_instruction_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let rows = jsonl(&[
        json!({"instruction": "Summarize the text.", "input": "It rained all day.", "output": "Rain."}),
        json!({"instruction": "Name a colour.", "input": "", "output": "Blue."}),
    ]);
    let mut stream = RowStream::open(&write(dir.path(), "alpaca.jsonl", rows), &opts(64)).unwrap();
    assert_eq!(stream.info().preset, Preset::Alpaca);
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first.source, "Summarize the text.\nIt rained all day.");
    assert_eq!(first.target.as_deref(), Some("Rain."));
    assert_eq!(stream.next().unwrap().unwrap().source, "Name a colour.");
}

#[test]
fn chat_rows_split_at_the_last_assistant_turn() {
    let dir = tempfile::tempdir().unwrap();
    let messages = write(
        dir.path(),
        "messages.jsonl",
        jsonl(&[json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Summarize: it rained."},
            {"role": "assistant", "content": "Rain."},
            {"role": "user", "content": "Thanks"},
        ]})]),
    );
    let data = load(&messages, &opts(256)).unwrap();
    assert_eq!(data.report.info.preset, Preset::Messages);
    assert_eq!(data.report.template, PromptTemplate::CHAT);
    let e = &data.examples[0];
    assert_eq!(
        decode(e.prompt_ids()),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSummarize: it rained.<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(decode(&e.input_ids[e.prompt_len..]), "Rain.<|endoftext|>");

    let sharegpt = write(
        dir.path(),
        "sharegpt.jsonl",
        jsonl(&[json!({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})]),
    );
    let mut options = opts(256);
    options.chat_template = Some(Arc::new(|history: &[ChatMessage]| -> String {
        history.iter().map(|m| format!("[{}] {}\n", m.role, m.content)).collect::<String>() + "[assistant] "
    }));
    let data = load(&sharegpt, &options).unwrap();
    assert_eq!(data.report.info.preset, Preset::ShareGpt);
    let e = &data.examples[0];
    assert_eq!(decode(e.prompt_ids()), "[user] Hi\n[assistant] ");
    assert_eq!(decode(&e.input_ids[e.prompt_len..]), "Hello<|endoftext|>");

    let no_reply = write(dir.path(), "no_reply.jsonl", jsonl(&[json!({"messages": [{"role": "user", "content": "Hi"}]})]));
    let err = load(&no_reply, &opts(256)).unwrap_err();
    assert!(err.to_string().contains("no assistant turn"), "{err}");
}

// ---- bad input ----

#[test]
fn a_missing_field_names_the_fields_that_exist() {
    let mut options = opts(512);
    options.mapping = Some(Mapping::columns("text", &["summary"]));
    let err = load(&test_file("data/dialogsum/dialogsum.dev.jsonl"), &options).unwrap_err();
    match &err {
        DataError::MissingField { field, available, at, .. } => {
            assert_eq!(field, "text");
            assert_eq!(available, &["dialogue", "fname", "summary", "topic"]);
            assert_eq!(*at, RowPosition::Line(1));
        }
        other => panic!("expected MissingField, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("dialogsum.dev.jsonl") && message.contains("dialogue, fname, summary, topic"), "{message}");

    let dir = tempfile::tempdir().unwrap();
    let rows = jsonl(&[json!({"dialogue": "a", "summary": "b"}), json!({"dialogue": "c", "topic": "d"})]);
    let err = load(&write(dir.path(), "rows.jsonl", rows), &opts(64)).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingField { at: RowPosition::Line(2), field, available, .. }
            if field == "summary" && available == &["dialogue", "topic"]),
        "{err}"
    );
}

#[test]
fn empty_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("a.jsonl", ""), ("b.jsonl", "\n  \n"), ("c.json", "[ ]"), ("d.csv", "dialogue,summary\n"), ("e.json", "")] {
        let path = write(dir.path(), name, text);
        let err = load(&path, &opts(64)).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{name}: {err}");
        assert!(err.to_string().contains(name));
    }
}

#[test]
fn invalid_json_reports_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        "{\"dialogue\": \"a\", \"summary\": \"b\"}\n{\"dialogue\": \"c\", \"summary\": \"d\"}\n{\"dialogue\": \"e\", \"summary\": }\n";
    let path = write(dir.path(), "bad.jsonl", text);
    let err = load(&path, &opts(64)).unwrap_err();
    assert!(matches!(err, DataError::InvalidJson { at: RowPosition::Line(3), .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("line 3") && message.contains("bad.jsonl"), "{message}");

    // In a JSON array the line is the file's, not the element's.
    let array = "[\n  {\"dialogue\": \"a\", \"summary\": \"b\"},\n  {\"dialogue\": \"c\",\n   \"summary\": },\n  {\"dialogue\": \"e\", \"summary\": \"f\"}\n]\n";
    let path = write(dir.path(), "bad.json", array);
    let err = load(&path, &opts(64)).unwrap_err();
    assert!(matches!(err, DataError::InvalidJson { at: RowPosition::Line(4), .. }), "{err}");

    let broken = write(dir.path(), "broken.json", "[\n {\"dialogue\": \"a\", \"summary\": \"b\"},\n]");
    let err = load(&broken, &opts(64)).unwrap_err();
    assert!(matches!(err, DataError::JsonStructure { at: RowPosition::Line(3), .. }), "{err}");
    let unclosed = write(dir.path(), "unclosed.json", "[\n {\"dialogue\": \"a\", \"summary\": \"b\"}\n");
    let err = load(&unclosed, &opts(64)).unwrap_err();
    assert!(matches!(err, DataError::JsonStructure { .. }), "{err}");
}

#[test]
fn non_utf8_text_reports_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"{\"dialogue\": \"a\", \"summary\": \"b\"}\n{\"dialogue\": \"".to_vec();
    bytes.extend_from_slice(b"caf\xe9\", \"summary\": \"d\"}\n");
    let err = load(&write(dir.path(), "latin1.jsonl", &bytes), &opts(64)).unwrap_err();
    assert!(matches!(err, DataError::NotUtf8 { at: RowPosition::Line(2), .. }), "{err}");
    assert!(err.to_string().contains("latin1.jsonl, line 2"), "{err}");

    let mut csv = b"dialogue,summary\na,b\nc,d\n".to_vec();
    csv.extend_from_slice(b"caf\xe9,e\n");
    let err = load(&write(dir.path(), "latin1.csv", &csv), &opts(64)).unwrap_err();
    assert!(matches!(err, DataError::NotUtf8 { at: RowPosition::Line(4), .. }), "{err}");

    let mut array = b"[\n{\"dialogue\": \"a\", \"summary\": \"b\"},\n{\"dialogue\": \"a\",\n\"summary\": \"\xff\"}]".to_vec();
    array.push(b'\n');
    let err = load(&write(dir.path(), "latin1.json", &array), &opts(64)).unwrap_err();
    assert!(matches!(err, DataError::NotUtf8 { at: RowPosition::Line(4), .. }), "{err}");
}

#[test]
fn bad_rows_are_skipped_and_counted_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let text = [
        "{\"dialogue\": \"one\", \"summary\": \"1\"}",
        "{\"dialogue\": \"two\", \"summary\": ",
        "{\"dialogue\": \"three\", \"summary\": \"3\"}",
        "{\"dialogue\": \"four\"}",
        "{\"dialogue\": \"five\", \"summary\": [\"5\", \"five\"]}",
        "{\"dialogue\": \"six\", \"summary\": 6}",
    ]
    .join("\n");
    let path = write(dir.path(), "mixed.jsonl", text);
    let err = load(&path, &opts(64)).unwrap_err();
    assert!(matches!(err, DataError::InvalidJson { at: RowPosition::Line(2), .. }), "{err}");

    let mut options = opts(64);
    options.skip_bad_rows = true;
    let data = load(&path, &options).unwrap();
    assert_eq!(data.report.counts.rows, 3);
    assert_eq!(data.report.counts.skipped, 3);
    let lines: Vec<RowPosition> = data.examples.iter().map(|e| e.at).collect();
    assert_eq!(lines, [RowPosition::Line(1), RowPosition::Line(3), RowPosition::Line(5)]);
    assert_eq!(data.examples[2].references, ["5", "five"]);
    let messages = &data.report.skip_messages;
    assert!(messages[0].contains("line 2") && messages[1].contains("line 4") && messages[2].contains("line 6"));

    let all_bad = write(dir.path(), "all_bad.jsonl", "{\"dialogue\": \"x\", \"summary\": 1}\n{\"dialogue\": \"y\", \"summary\": 2}\n");
    let err = load(&all_bad, &options).unwrap_err();
    assert!(matches!(err, DataError::AllRowsSkipped { skipped: 2, .. }), "{err}");

    let csv = write(dir.path(), "ragged.csv", "dialogue,summary\na,b\nc\nd,e\n");
    let data = load(&csv, &options).unwrap();
    assert_eq!((data.report.counts.rows, data.report.counts.skipped), (2, 1));
}

// ---- order, batches, splits ----

#[test]
fn seeded_shuffle_is_a_deterministic_permutation_per_epoch() {
    let a = seeded_shuffle(1000, 7, 0);
    assert_eq!(a, seeded_shuffle(1000, 7, 0));
    assert_ne!(a, seeded_shuffle(1000, 7, 1));
    assert_ne!(a, seeded_shuffle(1000, 8, 0));
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
}

#[test]
fn batches_cover_every_example_and_resume_at_a_position() {
    let data = load(&test_file("data/scitldr/SciTLDR-A/dev.jsonl"), &opts(256)).unwrap();
    let lengths: Vec<usize> = data.examples.iter().map(Example::seq_len).collect();
    for group_by_length in [false, true] {
        let plan = BatchPlan { batch_size: 8, group_by_length, drop_last: false, seed: 3 };
        let batches = epoch_batches(&lengths, &plan, 2);
        assert_eq!(batches, epoch_batches(&lengths, &plan, 2));
        assert_ne!(batches, epoch_batches(&lengths, &plan, 3));
        let mut seen: Vec<usize> = batches.concat();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());

        let batcher = Batcher::new(&data.examples, plan, PAD).unwrap();
        assert_eq!(batcher.batches_per_epoch(), batches.len());
        let whole: Vec<(DataPosition, Batch)> = batcher.batches_from(DataPosition { epoch: 2, batch: 0 }).collect();
        let resumed: Vec<(DataPosition, Batch)> = batcher.batches_from(DataPosition { epoch: 2, batch: 30 }).collect();
        assert_eq!(resumed.first().unwrap().0, DataPosition { epoch: 2, batch: 30 });
        assert_eq!(&whole[30..], resumed.as_slice());
    }
    let dropping = BatchPlan { batch_size: 8, group_by_length: false, drop_last: true, seed: 3 };
    let batches = epoch_batches(&lengths, &dropping, 0);
    assert_eq!(batches.len(), 619 / 8);
    assert!(batches.iter().all(|b| b.len() == 8));
    assert!(Batcher::new(&data.examples, BatchPlan { batch_size: 0, ..dropping }, PAD).is_err());
}

#[test]
fn grouping_by_length_cuts_padding() {
    let data = load(&test_file("data/dialogsum/dialogsum.dev.jsonl"), &opts(512)).unwrap();
    let padded = |group_by_length| {
        let plan = BatchPlan { batch_size: 8, group_by_length, drop_last: false, seed: 1 };
        let batcher = Batcher::new(&data.examples, plan, PAD).unwrap();
        batcher.batches_from(DataPosition::default()).map(|(_, b)| b.batch * b.seq - b.real_tokens).sum::<usize>()
    };
    let (plain, grouped) = (padded(false), padded(true));
    assert!(grouped * 3 < plain, "grouped {grouped} vs plain {plain}");
}

#[test]
fn validation_split_by_fraction_is_seeded_and_disjoint() {
    let (train, val) = split_by_ratio((0..500).collect::<Vec<_>>(), 0.1, 9).unwrap();
    assert_eq!((train.len(), val.len()), (450, 50));
    assert_eq!(split_by_ratio((0..500).collect::<Vec<_>>(), 0.1, 9).unwrap(), (train.clone(), val.clone()));
    assert_ne!(split_by_ratio((0..500).collect::<Vec<_>>(), 0.1, 10).unwrap().1, val);
    assert!(train.windows(2).all(|w| w[0] < w[1]) && val.windows(2).all(|w| w[0] < w[1]));
    assert!(val.iter().all(|v| !train.contains(v)));
    assert!(split_by_ratio(vec![1, 2], 1.0, 0).is_err());
}

#[test]
fn demo_files_and_splits_from_two_files() {
    let dir = tempfile::tempdir().unwrap();
    let demo = write_demo_files(dir.path()).unwrap();
    assert!(DEMO_README.contains("CC BY-NC-SA 4.0"));
    let splits = load_splits(&demo.train, &ValidationSource::File(demo.test.clone()), tokenizer(), &opts(512)).unwrap();
    assert_eq!((splits.train.examples.len(), splits.validation.examples.len()), (300, 50));
    assert_eq!(splits.validation.report.info.preset, Preset::DialogSum);
    assert!(splits.validation.examples.iter().all(|e| e.references.len() == 3));

    let by_fraction = ValidationSource::Fraction { fraction: 0.2, seed: 5 };
    let splits = load_splits(&demo.train, &by_fraction, tokenizer(), &opts(512)).unwrap();
    assert_eq!((splits.train.examples.len(), splits.validation.examples.len()), (240, 60));
}

#[test]
fn preview_shows_rows_histogram_counts_and_fields() {
    let path = test_file("data/dialogsum/dialogsum.dev.jsonl");
    let p = preview(&path, tokenizer(), &opts(256), 3, 10).unwrap();
    assert_eq!(p.info.format, DataFormat::Jsonl);
    assert_eq!(p.info.preset, Preset::DialogSum);
    assert_eq!(p.info.fields, ["dialogue", "fname", "summary", "topic"]);
    assert_eq!(p.template, PromptTemplate::SUMMARY);
    assert_eq!(p.rows.len(), 3);
    let first = &first_records(&path, 1)[0];
    assert_eq!(p.rows[0].row.target.as_deref(), Some(first["summary"].as_str().unwrap().trim()));
    assert!(p.rows.iter().all(|r| r.tokens <= 256 && r.tokens <= r.untruncated_tokens));
    assert_eq!(p.counts.rows, 500);
    assert_eq!(p.counts.skipped, 0);
    assert!(p.counts.truncated_source > 0);
    assert!(p.histogram.len() <= 10 && !p.histogram.is_empty());
    assert_eq!(p.histogram.iter().map(|b| b.count).sum::<usize>(), 500);
    assert!(p.histogram.windows(2).all(|w| w[0].hi == w[1].lo));
    let over: usize = p.histogram.iter().filter(|b| b.lo > 256).map(|b| b.count).sum();
    assert!(over <= p.counts.truncated_source);
    // The answer tokens a row trains on (what the head is charged for), counted from the labels.
    let examples = load(&path, &opts(256)).unwrap().examples;
    let labelled: usize = examples.iter().map(|e| e.labels().iter().filter(|&&l| l != IGNORE_INDEX).count()).sum();
    assert_eq!(p.mean_target_tokens, Some(labelled as f64 / 500.0));
    assert!(p.mean_target_tokens.unwrap() > 10.0);
}

#[test]
fn evaluation_prompts_leave_room_for_the_answer_whatever_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let dialogue = "#Person1#: ".to_string() + &"we should meet at the station tomorrow morning. ".repeat(20);
    let (short, long) = ("They meet.", &"They agree to meet at the station early tomorrow morning before work. ".repeat(3));
    let path = write(
        dir.path(),
        "rows.jsonl",
        jsonl(&[json!({"dialogue": dialogue, "summary": short}), json!({"dialogue": dialogue, "summary": long})]),
    );
    let (max_len, room) = (96, 24);
    let training = load(&path, &opts(max_len)).unwrap();
    assert_ne!(training.examples[0].prompt_ids(), training.examples[1].prompt_ids(), "in training the source makes room for the target");

    let eval = load(&path, &LoadOptions { answer_room: Some(room), ..opts(max_len) }).unwrap();
    let (a, b) = (&eval.examples[0], &eval.examples[1]);
    assert_eq!(a.prompt_ids(), b.prompt_ids(), "the prompt does not depend on the reference");
    assert_eq!(a.prompt_len, max_len - room, "the source fills what the answer leaves");
    assert!(decode(a.prompt_ids()).starts_with("#Person1#: we should meet"), "the dialogue's start is kept");
    for e in [a, b] {
        assert!(e.seq_len() <= max_len && e.seq_len() - e.prompt_len <= room, "{} tokens", e.seq_len());
    }
    assert_eq!(a.references, vec![short.to_string()]);
    assert_eq!(b.references, vec![long.trim().to_string()], "references stay whole for scoring");

    let err = load(&path, &LoadOptions { answer_room: Some(max_len), ..opts(max_len) }).unwrap_err();
    assert!(err.to_string().contains("leaves no room for 96 new tokens"), "{err}");
}
