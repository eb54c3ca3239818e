//! A container's log as a stream of lines, at the runtime boundary: what `berth logs`
//! reads. The engine sends frames (one per line it stored, or a piece of a long one);
//! here they become whole lines, each with the stream it came from and the engine's
//! timestamp, parsed once.

use std::time::SystemTime;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::RuntimeError;

/// Which of its output streams a container wrote a line to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    Stdout,
    Stderr,
}

/// One line a container wrote, without its newline. Untrusted: it may hold anything,
/// control characters and secrets too (`crate::logs` makes it safe to show).
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub source: LogSource,
    /// When the engine received it; None when the engine gave no readable time.
    pub timestamp: Option<jiff::Timestamp>,
    pub text: String,
}

/// Which part of a container's log to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// Keep reading what the container writes until it stops.
    pub follow: bool,
    /// Only lines the engine received at or after this time (whole seconds: the API's
    /// unit).
    pub since: Option<SystemTime>,
    /// Only the last N lines already written (then, when following, the new ones).
    pub tail: Option<usize>,
}

/// A container's log lines as they come; it ends at the end of the log, or when a
/// followed container stops.
pub type LogStream = BoxStream<'static, Result<LogLine, RuntimeError>>;

/// The longest line kept whole: a container that writes without a newline cannot make
/// berth hold more than this per stream; the rest comes as further lines.
pub const LINE_MAX: usize = 64 * 1024;

/// Frames of one container's output joined and cut into whole lines, per stream.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// The unfinished line of each stream and the time of its first piece.
    stdout: Pending,
    stderr: Pending,
}

#[derive(Debug, Default)]
struct Pending {
    text: String,
    timestamp: Option<jiff::Timestamp>,
}

impl LineSplitter {
    /// Take one frame in; returns the lines it finished.
    pub fn push(
        &mut self,
        source: LogSource,
        timestamp: Option<jiff::Timestamp>,
        text: &str,
    ) -> Vec<LogLine> {
        let pending = match source {
            LogSource::Stdout => &mut self.stdout,
            LogSource::Stderr => &mut self.stderr,
        };
        let mut lines = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if pending.text.is_empty() {
                pending.timestamp = timestamp;
            }
            // Up to the newline, or as much as the bound leaves room for (on a character
            // boundary).
            let mut end = rest.find('\n').unwrap_or(rest.len());
            let mut room = LINE_MAX - pending.text.len();
            let newline = end < rest.len() && end <= room;
            if !newline && end > room {
                while !rest.is_char_boundary(room) {
                    room -= 1;
                }
                end = room;
            }
            pending.text.push_str(&rest[..end]);
            rest = &rest[end + usize::from(newline)..];
            if newline || end == room {
                let mut text = std::mem::take(&mut pending.text);
                if newline && text.ends_with('\r') {
                    text.pop();
                }
                lines.push(LogLine {
                    source,
                    timestamp: pending.timestamp.take(),
                    text,
                });
            }
        }
        lines
    }

    /// What is left when the log ends: a last line without its newline.
    pub fn finish(&mut self) -> Vec<LogLine> {
        let mut lines = Vec::new();
        for (source, pending) in [
            (LogSource::Stdout, &mut self.stdout),
            (LogSource::Stderr, &mut self.stderr),
        ] {
            if !pending.text.is_empty() {
                lines.push(LogLine {
                    source,
                    timestamp: pending.timestamp.take(),
                    text: std::mem::take(&mut pending.text),
                });
            }
        }
        lines
    }
}

/// A frame asked for with timestamps: `2026-12-07T10:00:00.123456789Z text`. The time is
/// split off; a frame without a readable one is kept whole.
fn split_timestamp(frame: &str) -> (Option<jiff::Timestamp>, &str) {
    match frame.split_once(' ') {
        Some((time, text)) => match time.parse::<jiff::Timestamp>() {
            Ok(t) => (Some(t), text),
            Err(_) => (None, frame),
        },
        None => match frame.trim_end().parse::<jiff::Timestamp>() {
            // A frame that is only a time: the container wrote an empty line.
            Ok(t) => (Some(t), &frame[frame.trim_end().len()..]),
            Err(_) => (None, frame),
        },
    }
}

/// The log of container `id` through bollard. Timestamps are always asked for: a reader
/// that attaches again to a restarted container skips what it has already shown by them.
pub fn docker_log_stream(docker: &Docker, id: &str, options: &LogOptions) -> LogStream {
    tracing::debug!(target: "berth::runtime", call = "logs", "docker_api");
    let mut builder = bollard::query_parameters::LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .follow(options.follow);
    if let Some(since) = options.since {
        let secs = since
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        builder = builder.since(i32::try_from(secs).unwrap_or(i32::MAX));
    }
    if let Some(n) = options.tail {
        builder = builder.tail(&n.to_string());
    }
    let frames = docker.logs(id, Some(builder.build()));
    let context = format!("reading the logs of container {}", &id[..id.len().min(12)]);
    // Each frame becomes the lines it finished; the end of the log flushes the last one.
    let lines = frames
        .map(Some)
        .chain(futures::stream::iter([None]))
        .scan(LineSplitter::default(), move |split, frame| {
            let out: Vec<Result<LogLine, RuntimeError>> = match frame {
                None => split.finish().into_iter().map(Ok).collect(),
                Some(Err(e)) => vec![Err(error(&context, e))],
                Some(Ok(frame)) => {
                    let (source, bytes) = match frame {
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            (LogSource::Stdout, message)
                        }
                        LogOutput::StdErr { message } => (LogSource::Stderr, message),
                        LogOutput::StdIn { .. } => return futures::future::ready(Some(vec![])),
                    };
                    let text = String::from_utf8_lossy(&bytes);
                    let (timestamp, text) = split_timestamp(&text);
                    split
                        .push(source, timestamp, text)
                        .into_iter()
                        .map(Ok)
                        .collect()
                }
            };
            futures::future::ready(Some(out))
        })
        .flat_map(futures::stream::iter);
    lines.boxed()
}

/// What the engine said about a log read: a container that is not there is
/// [`RuntimeError::Gone`], so a reader can tell it from an engine that failed.
fn error(context: &str, e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => RuntimeError::Gone {
            context: context.to_string(),
        },
        BollardError::DockerResponseServerError { message, .. } => RuntimeError::Api {
            context: context.to_string(),
            message,
        },
        other => RuntimeError::Api {
            context: context.to_string(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_joined_and_cut_into_whole_lines_per_stream() {
        let mut split = LineSplitter::default();
        let t: jiff::Timestamp = "2026-12-07T10:00:00.5Z".parse().unwrap();
        let later: jiff::Timestamp = "2026-12-07T10:00:01Z".parse().unwrap();
        assert!(split.push(LogSource::Stdout, Some(t), "par").is_empty());
        let err = split.push(LogSource::Stderr, Some(later), "oops\n");
        assert_eq!(err[0].text, "oops");
        assert_eq!(err[0].source, LogSource::Stderr);
        let out = split.push(LogSource::Stdout, Some(later), "tial\r\nsecond\nthi");
        let texts: Vec<&str> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["partial", "second"]);
        // A line keeps the time of its first piece.
        assert_eq!(out[0].timestamp, Some(t));
        assert_eq!(out[1].timestamp, Some(later));
        let last = split.finish();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].text, "thi");
    }

    #[test]
    fn a_line_without_a_newline_is_cut_at_the_bound() {
        let mut split = LineSplitter::default();
        let lines = split.push(LogSource::Stdout, None, &"x".repeat(LINE_MAX + 10));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text.len(), LINE_MAX);
        assert_eq!(split.finish()[0].text.len(), 10);
    }

    #[test]
    fn the_engines_timestamp_is_split_off_a_frame() {
        let (t, text) = split_timestamp("2026-12-07T10:00:00.123456789Z hello world\n");
        assert_eq!(t.unwrap().to_string(), "2026-12-07T10:00:00.123456789Z");
        assert_eq!(text, "hello world\n");
        let (t, text) = split_timestamp("2026-12-07T10:00:00Z\n");
        assert!(t.is_some());
        assert_eq!(text, "\n");
        let (t, text) = split_timestamp("no time here\n");
        assert_eq!((t, text), (None, "no time here\n"));
    }
}
