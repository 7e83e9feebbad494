//! `.dockerignore` with the Docker CLI's rules (not gitignore's): patterns are anchored at the
//! context root, `*` and `?` stop at `/`, `**` crosses directories, a pattern that matches a
//! parent directory matches everything below it, `!` re-includes, and the last match wins.

use regex::Regex;

/// One compiled line of a `.dockerignore`.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    regex: Regex,
}

/// A `.dockerignore` pattern that cannot be compiled.
#[derive(Debug, thiserror::Error)]
#[error(".dockerignore line {line}: `{pattern}`: {reason}")]
pub struct PatternError {
    pub line: usize,
    pub pattern: String,
    pub reason: String,
}

/// The compiled patterns of one `.dockerignore`, in file order.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    /// Parses the file's text like the Docker CLI: `#` comments, trimmed lines, cleaned paths,
    /// a leading `/` dropped. `always_sent` names files (the Dockerfile, `.dockerignore`) that
    /// are re-included whatever the patterns say.
    pub fn parse(text: &str, always_sent: &[&str]) -> Result<Self, PatternError> {
        let mut patterns = Vec::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            if raw.starts_with('#') {
                continue;
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let (exclusion, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let error = |reason: &str| PatternError {
                line: index + 1,
                pattern: line.to_string(),
                reason: reason.to_string(),
            };
            if body.is_empty() {
                return Err(error("an exclusion needs a pattern after `!`"));
            }
            let cleaned = clean_path(body);
            let regex = compile(&cleaned).map_err(|e| error(&e))?;
            patterns.push(Pattern {
                text: cleaned,
                exclusion,
                regex,
            });
        }
        for name in always_sent {
            let cleaned = clean_path(name);
            let regex = compile(&cleaned).map_err(|reason| PatternError {
                line: 0,
                pattern: name.to_string(),
                reason,
            })?;
            patterns.push(Pattern {
                text: cleaned,
                exclusion: true,
                regex,
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// Whether the file at `path` (relative, `/`-separated) is left out of the context: the
    /// last pattern matching it, or one of its parent directories, decides.
    pub fn is_excluded(&self, path: &str) -> bool {
        let parents: Vec<&str> = match path.rsplit_once('/') {
            Some((parent, _)) => parent.split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an already excluded file, nor an exclusion an included one.
            if pattern.exclusion != excluded {
                continue;
            }
            let matched = pattern.regex.is_match(path)
                || (1..=parents.len()).any(|n| pattern.regex.is_match(&parents[..n].join("/")));
            if matched {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// Whether a walk must enter the excluded directory `dir`: only when a `!` pattern starts
    /// with it. Like the Docker CLI, `!**/x` does not reach into an excluded directory.
    pub fn may_reinclude_below(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", p.text).starts_with(&prefix))
    }
}

/// Go's `filepath.Clean` for `/`-separated paths, without a leading `/`.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !path.starts_with('/') {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// Translates a pattern to an anchored regular expression with Docker's wildcard meanings.
fn compile(pattern: &str) -> Result<Regex, String> {
    let mut out = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                // `**` at the end matches everything; elsewhere any number of directories.
                out.push_str(if chars.peek().is_none() {
                    ".*"
                } else {
                    "(.*/)?"
                });
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '\\' => match chars.next() {
                Some(next) => out.push_str(&regex::escape(&next.to_string())),
                None => out.push_str("\\\\"),
            },
            '[' => {
                // A character class, as in Go's filepath.Match (`^` negates).
                let mut class = String::from("[");
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' && class.len() > 1 {
                        closed = true;
                        break;
                    }
                    if c == '\\' || (c == '[' && class.len() > 1) {
                        class.push('\\');
                    }
                    class.push(c);
                }
                if !closed {
                    return Err("unterminated character class `[`".into());
                }
                class.push(']');
                out.push_str(&class);
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
    }
    out.push('$');
    Regex::new(&out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text, &["Dockerfile", ".dockerignore"]).unwrap()
    }

    #[test]
    fn patterns_are_anchored_at_the_root() {
        let rules = ignore("*.md\n");
        assert!(rules.is_excluded("README.md"));
        assert!(
            !rules.is_excluded("docs/README.md"),
            "`*` does not cross `/`"
        );
    }

    #[test]
    fn double_star_crosses_directories() {
        let rules = ignore("**/*.md\n");
        assert!(rules.is_excluded("README.md"));
        assert!(rules.is_excluded("a/b/c/README.md"));
        assert!(!rules.is_excluded("a/b/c/main.rs"));
        let rules = ignore("build/**\n");
        assert!(rules.is_excluded("build/x/y"));
        assert!(!rules.is_excluded("builder"));
    }

    #[test]
    fn a_matching_parent_excludes_its_contents() {
        let rules = ignore("node_modules\n/target/\n");
        assert!(rules.is_excluded("node_modules/a/b.js"));
        assert!(rules.is_excluded("target/debug/x"));
        assert!(!rules.is_excluded("src/node_modules.rs"));
    }

    #[test]
    fn last_match_wins_with_reinclusion() {
        let rules = ignore("*.md\n!KEEP.md\n");
        assert!(rules.is_excluded("README.md"));
        assert!(!rules.is_excluded("KEEP.md"));
        let rules = ignore("!KEEP.md\n*.md\n");
        assert!(
            rules.is_excluded("KEEP.md"),
            "a later exclusion wins over an earlier `!`"
        );
        let rules = ignore("docs\n!docs/keep\n");
        assert!(rules.is_excluded("docs/other"));
        assert!(!rules.is_excluded("docs/keep"));
        assert!(rules.may_reinclude_below("docs"));
        assert!(!rules.may_reinclude_below("other"));
    }

    #[test]
    fn dockerfile_and_dockerignore_are_always_sent() {
        let rules = ignore("*\n");
        assert!(rules.is_excluded("main.go"));
        assert!(!rules.is_excluded("Dockerfile"));
        assert!(!rules.is_excluded(".dockerignore"));
    }

    #[test]
    fn comments_blank_lines_and_cleaning() {
        let rules = ignore("# comment\n\n  ./a/../b/*.tmp  \n/abs\n");
        assert!(rules.is_excluded("b/x.tmp"));
        assert!(rules.is_excluded("abs"));
        assert!(!rules.is_excluded("# comment"));
    }

    #[test]
    fn question_mark_and_classes() {
        let rules = ignore("file?.txt\nlog[0-9].txt\nx[^a].y\n");
        assert!(rules.is_excluded("file1.txt"));
        assert!(!rules.is_excluded("file12.txt"));
        assert!(rules.is_excluded("log7.txt"));
        assert!(!rules.is_excluded("logx.txt"));
        assert!(rules.is_excluded("xb.y"));
        assert!(!rules.is_excluded("xa.y"));
    }

    #[test]
    fn regex_characters_are_literal() {
        let rules = ignore("a+b.(c)\n");
        assert!(rules.is_excluded("a+b.(c)"));
        assert!(!rules.is_excluded("aab.(c)"));
    }

    #[test]
    fn bad_patterns_are_located() {
        let err = DockerIgnore::parse("ok\n!\n", &[]).unwrap_err();
        assert_eq!(err.line, 2);
        let err = DockerIgnore::parse("[abc\n", &[]).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
