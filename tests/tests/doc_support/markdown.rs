//! Finding the commands a Markdown document marks for the doc runner (the markers are described
//! in `doc_commands.rs`).

/// The marker line placed directly above a fenced block that the runner executes.
pub const MARKER: &str = "<!-- doctest -->";

/// The opening of a hidden step: `<!-- doctest-setup: COMMANDS -->` on one line.
pub const SETUP_PREFIX: &str = "<!-- doctest-setup:";

/// One thing to run, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocStep {
    /// 1-based line of the marker's block (its opening fence) or of the setup comment.
    pub line: usize,
    pub body: StepBody,
}

/// How a step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepBody {
    /// A bash script, run with `bash -e -o pipefail`.
    Shell(String),
    /// SQL, run by psql through evshift with `ON_ERROR_STOP`.
    Sql(String),
}

/// An opened fence: its backtick count, info string and first line.
struct Fence {
    ticks: usize,
    info: String,
    line: usize,
    marked: bool,
    body: Vec<String>,
}

/// The marked steps of a document, in order. A malformed marker (one not directly followed by
/// a fence, a misspelt one, a marked block in a language the runner cannot run, an unclosed
/// fence) is an error naming its line, so a marker never silently stops working.
pub fn extract(text: &str) -> Result<Vec<DocStep>, String> {
    let mut steps = Vec::new();
    let mut fence: Option<Fence> = None;
    let mut marker_line: Option<usize> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(open) = fence.as_mut() {
            if closes(raw, open.ticks) {
                let open = fence.take().expect("a fence is open");
                if open.marked {
                    steps.push(step_of(&open)?);
                }
            } else {
                open.body.push(raw.to_string());
            }
            continue;
        }
        let opening = opens(raw);
        let marked = marker_line.take();
        if let (Some(marker), None) = (marked, &opening) {
            return Err(format!(
                "line {marker}: {MARKER} is not directly followed by a fenced block"
            ));
        }
        let line = raw.trim();
        if let Some((ticks, info)) = opening {
            fence = Some(Fence {
                ticks,
                info,
                line: number,
                marked: marked.is_some(),
                body: Vec::new(),
            });
        } else if line == MARKER {
            marker_line = Some(number);
        } else if let Some(rest) = line.strip_prefix(SETUP_PREFIX) {
            let command = rest.strip_suffix("-->").ok_or_else(|| {
                format!("line {number}: {SETUP_PREFIX} must end with --> on the same line")
            })?;
            steps.push(DocStep {
                line: number,
                body: StepBody::Shell(command.trim().to_string()),
            });
        } else if line.starts_with("<!-- doctest") {
            return Err(format!(
                "line {number}: unknown doc runner marker {line:?} (use {MARKER} or \
                 {SETUP_PREFIX} COMMANDS -->)"
            ));
        }
    }
    if let Some(marker) = marker_line {
        return Err(format!(
            "line {marker}: {MARKER} is not directly followed by a fenced block"
        ));
    }
    if let Some(open) = fence {
        return Err(format!(
            "line {}: the fenced block is never closed",
            open.line
        ));
    }
    Ok(steps)
}

/// A line opening a fence: three or more backticks (up to three spaces of indentation), then
/// the info string.
fn opens(line: &str) -> Option<(usize, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ticks = rest.len() - rest.trim_start_matches('`').len();
    (ticks >= 3).then(|| (ticks, rest[ticks..].trim().to_string()))
}

fn closes(line: &str, ticks: usize) -> bool {
    let line = line.trim();
    line.len() >= ticks && line.chars().all(|c| c == '`')
}

fn step_of(fence: &Fence) -> Result<DocStep, String> {
    let language = fence.info.split_whitespace().next().unwrap_or_default();
    let body = match language {
        "sql" => StepBody::Sql(fence.body.join("\n") + "\n"),
        "" | "sh" | "bash" | "shell" | "console" => StepBody::Shell(shell_script(&fence.body)),
        other => {
            return Err(format!(
                "line {}: a marked block must be sh, bash, shell, console, sql or plain, not \
                 {other:?}",
                fence.line
            ))
        }
    };
    Ok(DocStep {
        line: fence.line,
        body,
    })
}

/// The script of a block. A transcript (some line starts with `$ `) runs its `$ ` lines, with
/// their `\` continuation lines, and skips the sample output between them; any other block
/// runs as written.
fn shell_script(body: &[String]) -> String {
    if !body.iter().any(|l| l.starts_with("$ ")) {
        return body.join("\n") + "\n";
    }
    let mut script = String::new();
    let mut continuing = false;
    for line in body {
        let command = match line.strip_prefix("$ ") {
            Some(command) => command,
            None if continuing => line.as_str(),
            None => continue,
        };
        script.push_str(command);
        script.push('\n');
        continuing = command.trim_end().ends_with('\\');
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(line: usize, script: &str) -> DocStep {
        DocStep {
            line,
            body: StepBody::Shell(script.to_string()),
        }
    }

    #[test]
    fn only_marked_blocks_and_setup_comments_are_steps() {
        let text = "\
# Title

```sh
scripts/demo
```

<!-- doctest -->
```sh
evshift ctl stores
evshift ctl routes   # every route
```

<!-- doctest-setup: evshift ctl migrate \"$TENANT\" --to dedicated-1 -->

<!-- doctest -->
```sql
SELECT 1;
```

```json
{\"ok\": []}
```
";
        let steps = extract(text).unwrap();
        assert_eq!(
            steps,
            vec![
                shell(
                    8,
                    "evshift ctl stores\nevshift ctl routes   # every route\n"
                ),
                shell(13, "evshift ctl migrate \"$TENANT\" --to dedicated-1"),
                DocStep {
                    line: 16,
                    body: StepBody::Sql("SELECT 1;\n".to_string())
                },
            ]
        );
    }

    #[test]
    fn a_transcript_runs_its_prompt_lines_only() {
        let text = "\
<!-- doctest -->
```
$ evshift ctl status
ID  TENANT  STATE
7   7f8e    BULK_COPY
$ evshift ctl audit \\
    7
TIMESTAMP  EVENT
```
";
        assert_eq!(
            extract(text).unwrap(),
            vec![shell(
                2,
                "evshift ctl status\nevshift ctl audit \\\n    7\n"
            )]
        );
    }

    #[test]
    fn a_marker_inside_a_block_is_text() {
        let text = "```md\n<!-- doctest -->\n```sh\n```\n";
        // The marker and the ```sh line are text of the outer block (a fence with an info
        // string closes nothing), so nothing is marked.
        assert_eq!(extract(text).unwrap(), Vec::new());
        let text = "````md\n<!-- doctest -->\n```sh\nfalse\n```\n````\n";
        assert_eq!(extract(text).unwrap(), Vec::new());
    }

    #[test]
    fn markers_quoted_in_prose_are_text() {
        let text = "Mark a block with `<!-- doctest -->` or prepare with\n\
                    `<!-- doctest-setup: COMMANDS -->`.\n";
        assert_eq!(extract(text).unwrap(), Vec::new());
    }

    #[test]
    fn malformed_markers_name_their_line() {
        let cases = [
            ("<!-- doctest -->\n\n```sh\ntrue\n```\n", "line 1:"),
            ("text\n<!-- doctest -->\n", "line 2:"),
            ("<!-- doctest -->\n```python\nprint()\n```\n", "line 2:"),
            ("<!-- doctests -->\n", "line 1:"),
            ("<!-- doctest-setup: true\n-->\n", "line 1:"),
            ("<!-- doctest -->\n```sh\ntrue\n", "line 2:"),
        ];
        for (text, expected) in cases {
            let error = extract(text).expect_err(text);
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }
}
