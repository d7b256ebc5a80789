//! Temperatures: node_exporter's `thermal_zone` and `hwmon` collectors
//! (temperature sensors only), with the same names and labels, so the
//! "edge hardware runs hot" alerts written for node_exporter work.
//!
//! Reads /sys/class/thermal/thermal_zone*/ and /sys/class/hwmon/hwmon*/.
//! Machines without sensors (VMs) have neither: no series, no error. A
//! sensor that fails to read (some return EAGAIN or ENODATA while asleep)
//! is skipped for that collection.

use std::collections::BTreeMap;
use std::path::Path;

use crate::metrics::family::{Kind, Snapshot};
use crate::metrics::source::{CollectError, list_dir, read_attr, read_attr_i64};

use super::Host;

pub(super) fn thermal_zone(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let dir = host.roots.sys("class/thermal");
    let family = out.family(
        "node_thermal_zone_temp",
        "Zone temperature in Celsius",
        Kind::Gauge,
        &["type", "zone"],
    );
    for name in list_dir(&dir)? {
        let Some(zone) = name.strip_prefix("thermal_zone") else {
            continue;
        };
        let zone_dir = dir.join(&name);
        let (Some(kind), Some(milli)) = (
            read_attr(&zone_dir.join("type")),
            read_attr_i64(&zone_dir.join("temp")),
        ) else {
            continue;
        };
        family.push(&[&kind, zone], milli as f64 / 1000.0);
    }
    Ok(())
}

/// One temperature sensor of a chip: `temp<N>_{input,max,crit,label}`.
#[derive(Default)]
struct TempSensor {
    input: Option<f64>,
    max: Option<f64>,
    crit: Option<f64>,
    label: Option<String>,
}

pub(super) fn hwmon(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let dir = host.roots.sys("class/hwmon");
    let mut chips: Vec<(String, Option<String>, BTreeMap<String, TempSensor>)> = Vec::new();
    for name in list_dir(&dir)? {
        let chip_dir = dir.join(&name);
        if !chip_dir.is_dir() {
            continue;
        }
        let mut sensors = BTreeMap::new();
        read_temps(&chip_dir, &mut sensors);
        // Older drivers keep their attributes on the device, not the class dir.
        read_temps(&chip_dir.join("device"), &mut sensors);
        if sensors.is_empty() {
            continue;
        }
        chips.push((
            chip_name(&chip_dir, &name),
            read_attr(&chip_dir.join("name")),
            sensors,
        ));
    }
    let names = out.family(
        "node_hwmon_chip_names",
        "Annotation metric for human-readable chip names",
        Kind::Gauge,
        &["chip", "chip_name"],
    );
    for (chip, human, _) in &chips {
        if let Some(human) = human {
            names.push(&[chip, human], 1.0);
        }
    }
    let labels = out.family(
        "node_hwmon_sensor_label",
        "Label for given chip and sensor",
        Kind::Gauge,
        &["chip", "label", "sensor"],
    );
    for (chip, _, sensors) in &chips {
        for (sensor, t) in sensors {
            if let Some(label) = &t.label {
                labels.push(&[chip, label, sensor], 1.0);
            }
        }
    }
    for (metric, help, pick) in [
        (
            "node_hwmon_temp_celsius",
            "Hardware monitor for temperature (input)",
            (|t: &TempSensor| t.input) as fn(&TempSensor) -> Option<f64>,
        ),
        (
            "node_hwmon_temp_max_celsius",
            "Hardware monitor for temperature (max)",
            |t| t.max,
        ),
        (
            "node_hwmon_temp_crit_celsius",
            "Hardware monitor for temperature (crit)",
            |t| t.crit,
        ),
    ] {
        let family = out.family(metric, help, Kind::Gauge, &["chip", "sensor"]);
        for (chip, _, sensors) in &chips {
            for (sensor, t) in sensors {
                if let Some(v) = pick(t) {
                    family.push(&[chip, sensor], v);
                }
            }
        }
    }
    Ok(())
}

fn read_temps(dir: &Path, sensors: &mut BTreeMap<String, TempSensor>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(file) = entry.file_name().into_string() else {
            continue;
        };
        let Some((sensor, property)) = file.split_once('_') else {
            continue;
        };
        if !sensor
            .strip_prefix("temp")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let path = entry.path();
        let t = sensors.entry(sensor.to_string()).or_default();
        let milli = || read_attr_i64(&path).map(|v| v as f64 / 1000.0);
        match property {
            "input" => t.input = milli(),
            "max" => t.max = milli(),
            "crit" => t.crit = milli(),
            "label" => t.label = read_attr(&path),
            _ => {}
        }
    }
    sensors.retain(|_, t| t.input.is_some() || t.max.is_some() || t.crit.is_some());
}

/// node_exporter's stable chip name: `<bus>_<device>` from where the
/// `device` link points (`platform_coretemp_0`), else the `name` file, else
/// `hwmonN`. Numbering of hwmonN depends on module load order; the device
/// path does not.
fn chip_name(chip_dir: &Path, dir_name: &str) -> String {
    if let Ok(device) = std::fs::canonicalize(chip_dir.join("device")) {
        let dev = device.file_name().and_then(|n| n.to_str()).map(clean_name);
        let bus = device
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .map(clean_name);
        match (bus, dev) {
            (Some(bus), Some(dev)) if !bus.is_empty() && !dev.is_empty() => {
                return format!("{bus}_{dev}");
            }
            (_, Some(dev)) if !dev.is_empty() => return dev,
            _ => {}
        }
    }
    if let Some(name) = read_attr(&chip_dir.join("name")).map(|n| clean_name(&n))
        && !name.is_empty()
    {
        return name;
    }
    clean_name(dir_name)
}

/// Lower case, anything but `[a-z0-9:_]` becomes `_`, no leading or
/// trailing `_`.
fn clean_name(s: &str) -> String {
    let lower: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    lower.trim_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chip_names_are_cleaned_like_node_exporter() {
        assert_eq!(clean_name("coretemp.0"), "coretemp_0");
        assert_eq!(clean_name("-ACPI Thermal-"), "acpi_thermal");
    }
}
