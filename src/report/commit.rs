//! `umbrella commit`: the release commit made, or why there was none.

use std::io::Write;

use crate::formats::layout;
use crate::stages::commit::CommitOutcome;

/// Writes the commit's short id and subject, or that the state was unchanged.
pub fn write_commit(
    out: &mut impl Write,
    env: &str,
    outcome: &CommitOutcome,
) -> std::io::Result<()> {
    match outcome {
        CommitOutcome::Committed { id, message } => writeln!(
            out,
            "committed {} {}",
            &id[..12.min(id.len())],
            message.lines().next().unwrap_or_default()
        ),
        CommitOutcome::Unchanged => {
            writeln!(
                out,
                "nothing to commit: {} is unchanged",
                layout::env_path(env)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_its_short_id_and_subject() {
        let mut out = Vec::new();
        let outcome = CommitOutcome::Committed {
            id: "0123456789abcdef0123".into(),
            message: "umbrella: release production\n\nImage: x".into(),
        };
        write_commit(&mut out, "production", &outcome).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "committed 0123456789ab umbrella: release production\n"
        );
        let mut out = Vec::new();
        write_commit(&mut out, "production", &CommitOutcome::Unchanged).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "nothing to commit: umbrella-state/production is unchanged\n"
        );
    }
}
