//! Grid carbon intensity: grams of CO2(-equivalent) emitted per kWh drawn from the grid.

/// World average electricity (approximate).
pub const DEFAULT_G_PER_KWH: f64 = 475.0;

/// Approximate annual averages (name, g/kWh, label): real grids vary by year, season and hour,
/// so a user who knows their supplier's figure should pass it as a number.
pub const PRESETS: &[(&str, f64, &str)] = &[
    ("world", 475.0, "world average (approx.)"),
    ("eu", 250.0, "EU average (approx.)"),
    ("us", 370.0, "US average (approx.)"),
    ("france", 55.0, "France (approx.)"),
    ("india", 700.0, "India (approx.)"),
];

/// A number in g/kWh or a preset name (`--grid-g-per-kwh eu`).
pub fn parse_intensity(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if let Some(&(_, g, _)) = PRESETS.iter().find(|(name, ..)| name.eq_ignore_ascii_case(text)) {
        return Ok(g);
    }
    match text.parse::<f64>() {
        Ok(g) if g.is_finite() && g >= 0.0 => Ok(g),
        _ => {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
            Err(format!("expected g CO2/kWh (a number >= 0) or one of {}", names.join(", ")))
        }
    }
}

pub fn co2_grams(wh: f64, g_per_kwh: f64) -> f64 {
    wh / 1000.0 * g_per_kwh
}
