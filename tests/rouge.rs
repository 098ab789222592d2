//! ROUGE against reference numbers from Google's rouge-score 0.1.2
//! (tests/fixtures/rouge/expected.json, described in the README beside it).

use greentrainer::eval::rouge::*;
use serde_json::Value;

const TOL: f64 = 1e-6;

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rouge/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn rows<'a>(fixture: &'a Value, key: &str) -> &'a Vec<Value> {
    fixture[key].as_array().unwrap_or_else(|| panic!("fixture has no array {key:?}"))
}

fn metric<'a>(scores: &'a RougeScores, name: &str) -> &'a Score {
    match name {
        "rouge1" => &scores.rouge1,
        "rouge2" => &scores.rouge2,
        "rougeL" => &scores.rouge_l,
        "rougeLsum" => &scores.rouge_lsum,
        other => panic!("unknown metric {other}"),
    }
}

/// Compares every metric and field the row has; returns (values compared, max abs error).
fn check_rows(rows: &[Value], opts: &RougeOptions) -> (usize, f64) {
    let (mut compared, mut max_err) = (0, 0.0f64);
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let scores = score(row["prediction"].as_str().unwrap(), row["reference"].as_str().unwrap(), opts);
        for name in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
            let Some(expected) = row.get(name) else {
                continue;
            };
            let got = metric(&scores, name);
            for (field, value) in [("p", got.precision), ("r", got.recall), ("f", got.fmeasure)] {
                let Some(want) = expected.get(field).and_then(Value::as_f64) else {
                    continue;
                };
                let err = (value - want).abs();
                max_err = max_err.max(err);
                compared += 1;
                if err > TOL {
                    failures.push(format!("row {i} {name}.{field}: got {value}, want {want}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    (compared, max_err)
}

#[test]
fn matches_rouge_score_without_stemmer() {
    let fixture = fixture();
    let rows = rows(&fixture, "no_stemmer");
    assert!(rows.len() >= 200, "expected at least 200 rows, got {}", rows.len());
    let (compared, max_err) = check_rows(rows, &RougeOptions { use_stemmer: false });
    // 4 metrics x (p, r, f) per row.
    assert_eq!(compared, rows.len() * 12);
    eprintln!("no stemmer: {} rows, {compared} values, max abs error {max_err:e}", rows.len());
}

#[test]
fn matches_rouge_score_with_porter_stemmer() {
    let fixture = fixture();
    let rows = rows(&fixture, "porter_stemmer");
    assert!(rows.len() >= 50, "expected at least 50 rows, got {}", rows.len());
    let (compared, max_err) = check_rows(rows, &RougeOptions { use_stemmer: true });
    assert!(compared >= rows.len() * 3, "only {compared} values compared");
    eprintln!("porter: {} rows, {compared} values, max abs error {max_err:e}", rows.len());
}

#[test]
fn stemmer_changes_scores_on_fixture() {
    // Guards against the stemmer option being ignored: it must move some F1 on this data.
    let fixture = fixture();
    let rows = rows(&fixture, "porter_stemmer");
    let changed = rows
        .iter()
        .filter(|row| {
            let (p, r) = (row["prediction"].as_str().unwrap(), row["reference"].as_str().unwrap());
            let plain = score(p, r, &RougeOptions { use_stemmer: false });
            let stemmed = score(p, r, &RougeOptions { use_stemmer: true });
            plain.rouge1.fmeasure != stemmed.rouge1.fmeasure
        })
        .count();
    assert!(changed > 0);
}

#[test]
fn corpus_score_is_mean_of_fixture_f1() {
    let fixture = fixture();
    let rows = rows(&fixture, "no_stemmer");
    let preds: Vec<String> = rows.iter().map(|r| r["prediction"].as_str().unwrap().to_string()).collect();
    let refs: Vec<Vec<String>> = rows.iter().map(|r| vec![r["reference"].as_str().unwrap().to_string()]).collect();
    let corpus = corpus_score(&preds, &refs, &RougeOptions::default());
    assert_eq!(corpus.count, rows.len());
    let mean = |name: &str| rows.iter().map(|r| r[name]["f"].as_f64().unwrap()).sum::<f64>() / rows.len() as f64;
    for (got, name) in [(corpus.rouge1, "rouge1"), (corpus.rouge2, "rouge2"), (corpus.rouge_l, "rougeL"), (corpus.rouge_lsum, "rougeLsum")]
    {
        assert!((got - mean(name)).abs() <= TOL, "{name}: got {got}, want {}", mean(name));
    }
}
