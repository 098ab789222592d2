//! Green accounting: sysfs energy readers on fake trees (wraparound, odd content), budget -> rho on
//! the SmolLM2-135M config, the run card, and a budgeted run end to end on the tiny Llama.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use greentrainer::device::ComputeDevice;
use greentrainer::eval::rouge::CorpusRouge;
use greentrainer::green::Footprint;
use greentrainer::green::budget::{Budget, RunPlan};
use greentrainer::green::carbon::parse_intensity;
use greentrainer::green::card::RunCard;
use greentrainer::green::meter::{self, EnergySource, Meter, amdgpu_sensors, rapl_sensors};
use greentrainer::model::config::LlamaConfig;
use greentrainer::profile::llama::llama_ops;
use greentrainer::profile::{BatchShape, profile};
use greentrainer::train::{Event, MethodKind, TrainConfig, Trainer};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn rapl_tree(root: &Path) {
    write(root, "sys/class/powercap/intel-rapl:0/name", "package-0\n");
    write(root, "sys/class/powercap/intel-rapl:0/energy_uj", "1000\n");
    write(root, "sys/class/powercap/intel-rapl:0/max_energy_range_uj", "1000000\n");
    // A subzone (part of package 0), the platform domain, and a zone with junk: all skipped.
    write(root, "sys/class/powercap/intel-rapl:0:0/name", "core\n");
    write(root, "sys/class/powercap/intel-rapl:0:0/energy_uj", "5\n");
    write(root, "sys/class/powercap/intel-rapl:1/name", "psys\n");
    write(root, "sys/class/powercap/intel-rapl:1/energy_uj", "7\n");
    write(root, "sys/class/powercap/intel-rapl:2/name", "package-1\n");
    write(root, "sys/class/powercap/intel-rapl:2/energy_uj", "not a number\n");
}

#[test]
fn rapl_counts_packages_across_wraparound() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    rapl_tree(root);
    let sensors = rapl_sensors(root);
    assert_eq!(sensors.len(), 1, "only package 0 is readable and not overlapping");
    let mut meter = Meter::from_sensors(sensors);
    let counter = "sys/class/powercap/intel-rapl:0/energy_uj";
    write(root, counter, "501000");
    meter.sample();
    write(root, counter, "999000");
    meter.sample();
    // Wrapped at 1e6 uJ: 1000 uJ to the top, then 2000 uJ.
    write(root, counter, "2000");
    let energy = meter.finish(1e12, meter::CPU);
    assert!((energy.joules - (0.5 + 0.498 + 0.003)).abs() < 1e-9, "{}", energy.joules);
    assert_eq!(energy.source, EnergySource::Measured { sensors: vec!["RAPL intel-rapl:0 package-0".into()] });
}

#[test]
fn unreliable_counters_fall_back_to_the_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "sys/class/powercap/intel-rapl:0/name", "package-0");
    write(root, "sys/class/powercap/intel-rapl:0/energy_uj", "1000");
    // No max_energy_range_uj: a counter going backwards cannot be trusted.
    let mut meter = Meter::from_sensors(rapl_sensors(root));
    write(root, "sys/class/powercap/intel-rapl:0/energy_uj", "10");
    meter.sample();
    assert_eq!(meter.measured_joules(), None);
    let energy = meter.finish(5e9 * 3600.0, meter::CPU);
    assert!((energy.wh() - 1.0).abs() < 1e-12);
    assert!(matches!(energy.source, EnergySource::Estimated { .. }));

    // A file turning into junk mid-run, and an empty tree.
    write(root, "sys/class/powercap/intel-rapl:0/max_energy_range_uj", "100000");
    let mut meter = Meter::from_sensors(rapl_sensors(root));
    write(root, "sys/class/powercap/intel-rapl:0/energy_uj", "\u{0}\u{1}garbage");
    meter.sample();
    assert_eq!(meter.measured_joules(), None);
    let empty = tempfile::tempdir().unwrap();
    assert!(rapl_sensors(empty.path()).is_empty() && amdgpu_sensors(empty.path()).is_empty());
    assert_eq!(Meter::from_sensors(Vec::new()).measured_joules(), None);
}

#[test]
fn amdgpu_power_is_integrated_and_energy_counters_preferred() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "sys/class/drm/card0/device/hwmon/hwmon3/name", "amdgpu\n");
    write(root, "sys/class/drm/card0/device/hwmon/hwmon3/power1_average", "50000000\n");
    write(root, "sys/class/drm/card0-DP-1/device/hwmon/hwmon4/name", "amdgpu\n");
    write(root, "sys/class/drm/card0-DP-1/device/hwmon/hwmon4/power1_average", "1\n");
    write(root, "sys/class/drm/card1/device/hwmon/hwmon5/name", "nouveau\n");
    write(root, "sys/class/drm/card1/device/hwmon/hwmon5/power1_average", "1\n");
    let outer = Instant::now();
    let mut meter = Meter::from_sensors(amdgpu_sensors(root));
    let inner = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let inner_s = inner.elapsed().as_secs_f64();
    meter.sample();
    let outer_s = outer.elapsed().as_secs_f64();
    let j = meter.measured_joules().unwrap();
    assert!(50.0 * inner_s <= j && j <= 50.0 * outer_s, "{j} J for {inner_s}..{outer_s} s at 50 W");

    write(root, "sys/class/drm/card0/device/hwmon/hwmon3/energy1_input", "100");
    let meter = Meter::from_sensors(amdgpu_sensors(root));
    write(root, "sys/class/drm/card0/device/hwmon/hwmon3/energy1_input", "2000100");
    let energy = meter.finish(0.0, meter::GPU);
    assert!((energy.joules - 2.0).abs() < 1e-9);
    assert_eq!(energy.source, EnergySource::Measured { sensors: vec!["amdgpu card0/hwmon3/energy1_input".into()] });
}

fn smollm2_plan() -> RunPlan {
    let path = common::fixture("paper-configs/smollm2-135m.json");
    let config = LlamaConfig::from_json_str(&fs::read_to_string(&path).unwrap(), "smollm2-135m.json").unwrap();
    let p = profile(&llama_ops(&config), BatchShape { batch: 4, seq: 512, decoder_seq: None }, false).unwrap();
    RunPlan { micro_steps: 1000, selections: 3, full_step_macs: p.t_full(), forward_macs: p.t_fp() }
}

#[test]
fn budget_rho_is_monotone_and_fits_on_smollm2() {
    let plan = smollm2_plan();
    let min = plan.flops(plan.min_rho());
    let max = plan.flops(1.0);
    assert!(plan.min_rho() > 0.2 && plan.min_rho() < 0.5, "forward share {}", plan.min_rho());
    let mut previous = 0.0;
    for i in 0..=50 {
        let budget = min + (max - min) * i as f64 / 50.0;
        let rho = plan.rho_for(budget).unwrap();
        assert!(rho >= previous, "rho fell from {previous} to {rho} at budget {budget:e}");
        assert!(plan.flops(rho) <= budget * (1.0 + 1e-12), "{rho} overspends {budget:e}");
        assert!(rho >= plan.min_rho() - 1e-12 && rho <= 1.0);
        previous = rho;
    }
    assert_eq!(plan.rho_for(10.0 * max).unwrap(), 1.0);
    assert!(plan.rho_for(0.99 * min).unwrap_err().contains("smallest feasible"));

    // Energy, CO2 and time budgets go through the stated assumptions.
    let eff = meter::CPU;
    let wh = plan.flops(0.5) / eff.flops_per_joule / 3600.0;
    let rho = plan.rho_for(Budget::EnergyWh(wh).to_flops(eff, 475.0)).unwrap();
    assert!((rho - 0.5).abs() < 1e-9);
    let co2 = Budget::Co2G(wh * 475.0 / 1000.0).to_flops(eff, 475.0);
    assert!((plan.rho_for(co2).unwrap() - 0.5).abs() < 1e-9);
    assert!(Budget::TimeS(10.0).to_flops(eff, 475.0) == 10.0 * eff.flops_per_second);
}

#[test]
fn budget_and_intensity_parse_from_flags_and_toml() {
    assert_eq!("2.5wh".parse::<Budget>().unwrap(), Budget::EnergyWh(2.5));
    assert_eq!("30 g".parse::<Budget>().unwrap(), Budget::Co2G(30.0));
    assert_eq!("600s".parse::<Budget>().unwrap(), Budget::TimeS(600.0));
    assert_eq!("1e15FLOPs".parse::<Budget>().unwrap(), Budget::Flops(1e15));
    assert!("-3wh".parse::<Budget>().is_err() && "5 joules".parse::<Budget>().is_err() && "wh".parse::<Budget>().is_err());
    assert_eq!(parse_intensity("France").unwrap(), 55.0);
    assert_eq!(parse_intensity("123.5").unwrap(), 123.5);
    assert!(parse_intensity("mars").is_err() && parse_intensity("-1").is_err());
    let c: TrainConfig = toml::from_str("grid_g_per_kwh = 250.0\nbudget = { co2_g = 12.0 }\n").unwrap();
    assert_eq!((c.grid_g_per_kwh, c.budget), (250.0, Some(Budget::Co2G(12.0))));
    assert_eq!(TrainConfig::default().grid_g_per_kwh, 475.0);
}

#[test]
fn run_card_round_trips() {
    let card = RunCard {
        model: "m".into(),
        data: "d.jsonl".into(),
        method: "GreenTrainer (rho 0.5)".into(),
        rho: Some(0.5),
        selection_size: 12,
        steps: 4,
        flops_spent: 1.5e12,
        flops_full: 3e12,
        final_loss: Some(2.25),
        footprint: Footprint {
            wall_time_s: 3.5,
            energy_wh: 0.01,
            energy_source: EnergySource::Estimated { flops_per_joule: 5e9, device_class: "CPU".into() },
            co2_g: 0.00475,
            grid_g_per_kwh: 475.0,
            budget: Some(greentrainer::green::budget::BudgetReport { budget: Budget::Flops(2e12), rho: 0.5, realised: 1.5e12 }),
        },
        rouge: Vec::new(),
    };
    let json = serde_json::to_string(&card).unwrap();
    assert_eq!(serde_json::from_str::<RunCard>(&json).unwrap(), card);
    let dir = tempfile::tempdir().unwrap();
    card.write(dir.path()).unwrap();
    let back: RunCard = serde_json::from_str(&fs::read_to_string(dir.path().join("run_card.json")).unwrap()).unwrap();
    assert_eq!(back, card);
    let md = fs::read_to_string(dir.path().join("run_card.md")).unwrap();
    assert!(md.contains("estimated") && md.contains("475 g/kWh") && md.contains("rho"), "{md}");

    // Evaluating the saved model adds its ROUGE; a second evaluation of the same file replaces it.
    let rouge = |r1| CorpusRouge { rouge1: r1, rouge2: 0.1, rouge_l: 0.2, rouge_lsum: 0.25, count: 50 };
    assert!(RunCard::record_rouge(dir.path(), "test.jsonl", rouge(0.3)).unwrap());
    assert!(RunCard::record_rouge(dir.path(), "test.jsonl", rouge(0.35)).unwrap());
    let back = RunCard::read(dir.path()).unwrap().unwrap();
    assert_eq!(back.rouge.len(), 1);
    assert_eq!(back.rouge[0].rouge, rouge(0.35));
    let md = fs::read_to_string(dir.path().join("run_card.md")).unwrap();
    assert!(md.contains("35.00 / 10.00 / 20.00 / 25.00 on test.jsonl (50 rows)"), "{md}");
    let elsewhere = tempfile::tempdir().unwrap();
    assert!(!RunCard::record_rouge(elsewhere.path(), "test.jsonl", rouge(0.3)).unwrap(), "no card, nothing written");
}

#[test]
fn budgeted_run_reports_energy_and_writes_the_card() {
    let out = tempfile::tempdir().unwrap();
    let mut config = TrainConfig {
        model: common::fixture("tiny-llama"),
        data: Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/dialogsum.train.jsonl"),
        output: out.path().to_path_buf(),
        method: MethodKind::Greentrainer,
        epochs: 0,
        max_steps: 3,
        batch_size: 2,
        max_len: 48,
        save_model: true,
        grid_g_per_kwh: 55.0,
        ..TrainConfig::default()
    };
    let probe = Trainer::prepare(config.clone(), ComputeDevice::cpu()).unwrap();
    let plan = greentrainer::green::run_plan(&probe).unwrap();
    let budget = plan.flops(0.7);
    config.budget = Some(Budget::Flops(budget));
    let mut trainer = Trainer::prepare(config, ComputeDevice::cpu()).unwrap();
    assert!((trainer.config.rho - 0.7).abs() < 1e-9, "rho {}", trainer.config.rho);
    let mut events = Vec::new();
    trainer.run(&mut |e: &Event| events.push(e.clone()), &AtomicBool::new(false), false).unwrap();
    let n = events.len();
    let (Event::Energy(f), Event::Finished { flops_spent, .. }) = (&events[n - 2], &events[n - 1]) else {
        panic!("expected energy then finished, got {:?}", &events[n - 2..]);
    };
    let report = f.budget.clone().unwrap();
    assert_eq!(report.realised, *flops_spent);
    assert!(*flops_spent <= budget, "{flops_spent:e} > {budget:e}");
    assert!(f.energy_wh > 0.0 && f.grid_g_per_kwh == 55.0 && (f.co2_g - f.energy_wh * 0.055).abs() < 1e-12);
    let card: RunCard = serde_json::from_str(&fs::read_to_string(out.path().join("model/run_card.json")).unwrap()).unwrap();
    // serde_json's default float parsing may differ in the last bit, hence the tolerances.
    assert_eq!((&card.footprint.energy_source, card.steps), (&f.energy_source, 3));
    assert!((card.footprint.co2_g - f.co2_g).abs() < 1e-15 && (card.rho.unwrap() - trainer.config.rho).abs() < 1e-12);
    assert!(card.selection_size > 0 && out.path().join("model/run_card.md").exists());
    assert!(greentrainer::green::dry_run_report(&trainer).unwrap().contains("LoRA r 8"));
}
