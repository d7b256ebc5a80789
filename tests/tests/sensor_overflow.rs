//! A full ring buffer: the sensor counts what the kernel could not hand
//! over and reports it (status, log, a node event for the fleet). Needs
//! root.
//!
//! Alone in its own test binary on purpose: the flood it makes reaches
//! every daemon on the machine (each test's sensor sees every event), and
//! cargo runs test binaries one after another, so no other test's daemon
//! is running to lose events to it.

use edge_agent_tests::sensor::{
    EVENT_TIMEOUT, expect_in_outbox, sensor_details, sensor_scratch, start_with_sensor,
};
use edge_agent_tests::{require_root, status_json, wait_for};

#[test]
fn a_full_ring_buffer_counts_its_losses_and_reports_them() {
    require_root();
    // The smallest ring the kernel allows: a burst cannot fit.
    let s = sensor_scratch("ring_buffer_bytes = 4096");
    let d = start_with_sensor(&s);
    let dir = s.path().join("burst");
    std::fs::create_dir(&dir).unwrap();
    let lost = wait_for(EVENT_TIMEOUT, || {
        for i in 0..2000 {
            let _ = std::fs::write(dir.join(format!("f{i}")), b"x");
        }
        let k = sensor_details(&s);
        (k["lost_total"].as_u64()? > 0).then_some(k)
    })
    .unwrap_or_else(|| panic!("no losses counted: {}", sensor_details(&s)));
    assert!(
        lost["kernel_events_total_by_outcome"]["lost"]
            .as_u64()
            .unwrap()
            > 0,
        "{lost}"
    );
    // The loss is reported: a node event for the fleet, and the log.
    expect_in_outbox(&s, "node_event", "sensor_events_lost");
    assert!(
        d.log().contains("kernel events were lost"),
        "log:\n{}",
        d.log()
    );
    let st = status_json(&s);
    assert!(
        st["stages"]["sensor"]["summary"]
            .as_str()
            .unwrap()
            .contains(" lost"),
        "{st}"
    );
}
