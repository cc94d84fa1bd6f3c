//! Metrics files read back by Prometheus's own parser: Debian's
//! `python3-prometheus-client` (installed by `.ci/install-deps`), run with
//! the system's Python. A test that needs it fails when it is missing.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

/// The Python interpreter Debian's package installs the parser for.
const PYTHON: &str = "/usr/bin/python3";

/// Prints each sample of the text on stdin as one JSON line
/// `[name, labels, value]`, after `prometheus_client`'s parser read it all.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value, family.type]))
"#;

/// One sample: its labels (sorted) and value, with its family's type.
pub type Samples = BTreeMap<(String, Vec<(String, String)>), (f64, String)>;

/// The metrics file parsed by the real Prometheus parser. Panics (the test
/// fails) when the parser is missing or refuses the file.
pub fn parse_metrics(text: &str) -> Samples {
    use std::io::Write;
    let mut child = Command::new(PYTHON)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PYTHON} is needed (apt-get install python3): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics (is python3-prometheus-client installed?): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = Samples::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (name, labels, value, kind): (String, BTreeMap<String, String>, f64, String) =
            serde_json::from_str(line).unwrap();
        samples.insert((name, labels.into_iter().collect()), (value, kind));
    }
    samples
}

/// The value of the sample `name{labels}`, if there is one.
pub fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    samples.get(&(name.to_owned(), labels)).map(|(v, _)| *v)
}

/// The value of the unlabelled sample `name` in `text`, read without the
/// parser: cheap enough to poll on while waiting for a file to show it (the
/// checks themselves go through [`parse_metrics`]).
pub fn unlabelled(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
