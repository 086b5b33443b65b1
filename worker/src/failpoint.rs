//! Fault injection for the tests that kill a worker mid-task: `REWIND_FAILPOINTS` names the
//! points to pause at (`capture=3000,diff=3000`: milliseconds), and `REWIND_FAILPOINT_DIR` a
//! folder where each point, when reached, leaves a file `<point>.hit` so that a test knows the
//! worker is there before it sends SIGKILL. Unset (always, outside tests), a point costs one
//! look at a value read once per process.

use std::sync::OnceLock;
use std::time::Duration;

/// The points and their pauses, read from the environment once.
fn points() -> &'static Vec<(String, Duration)> {
    static POINTS: OnceLock<Vec<(String, Duration)>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("REWIND_FAILPOINTS")
            .map(|v| parse(&v))
            .unwrap_or_default()
    })
}

fn parse(spec: &str) -> Vec<(String, Duration)> {
    spec.split(',')
        .filter_map(|p| {
            let (name, ms) = p.split_once('=')?;
            Some((
                name.trim().to_owned(),
                Duration::from_millis(ms.trim().parse().ok()?),
            ))
        })
        .collect()
}

/// Pauses at point `name` when the environment asks for it (blocking: call it on a blocking
/// thread).
pub fn hit(name: &str) {
    let Some((_, pause)) = points().iter().find(|(n, _)| n == name) else {
        return;
    };
    if let Some(dir) = std::env::var_os("REWIND_FAILPOINT_DIR") {
        let _ = std::fs::write(std::path::Path::new(&dir).join(format!("{name}.hit")), b"");
    }
    tracing::warn!(point = name, ?pause, "failpoint reached");
    std::thread::sleep(*pause);
}

#[cfg(test)]
mod tests {
    #[test]
    fn specs_parse_and_bad_entries_are_ignored() {
        let p = super::parse("capture=3000, diff = 5,broken,x=y");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].0, "diff");
        assert_eq!(p[1].1.as_millis(), 5);
    }
}
