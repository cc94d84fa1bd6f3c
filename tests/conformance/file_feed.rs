//! Stand-in for the library's `transport::open_feed` until it lands: the
//! follower of a file (local path, mount, or SFTP) as a [`Feed`]. Only
//! `open_feed` below is used by the suite; replacing its body with the
//! library's call is all that changes then.

use std::path::PathBuf;
use std::time::Duration;

use banshare::follow::{
    Cursor, FollowError, FollowEvent, Follower, Handle, Line, LocalFs, LogFs, Mode,
};
use banshare::transport::feed::Unread;
use banshare::transport::{Entry, Feed, FeedError, LogLocation, Notice, Position, SftpSettings};

/// The read side for `location`.
pub fn open_feed(location: &LogLocation, sftp: &SftpSettings) -> Box<dyn Feed> {
    match location {
        LogLocation::File(path) => Box::new(FollowFeed::new(LocalFs, path.clone(), location)),
        LogLocation::Sftp(url) => Box::new(FollowFeed::new(
            banshare::transport::sftp::SftpFs::new(url, sftp),
            url.path.clone(),
            location,
        )),
    }
}

struct FollowFeed<F: LogFs> {
    log: String,
    path: PathBuf,
    fs: Option<F>,
    follower: Option<Follower<F>>,
    resume: Option<Cursor>,
    notices: Vec<Notice>,
}

impl<F: LogFs> FollowFeed<F> {
    fn new(fs: F, path: PathBuf, location: &LogLocation) -> FollowFeed<F> {
        FollowFeed {
            log: location.to_string(),
            path,
            fs: Some(fs),
            follower: None,
            resume: None,
            notices: Vec::new(),
        }
    }

    fn follower(&mut self) -> &mut Follower<F> {
        if self.follower.is_none() {
            let fs = self.fs.take().expect("made once");
            self.follower = Some(Follower::new(fs, self.path.clone(), self.resume));
        }
        self.follower.as_mut().expect("just made")
    }
}

impl<F: LogFs> Feed for FollowFeed<F> {
    fn log(&self) -> &str {
        &self.log
    }

    fn resume(&mut self, saved: &Position) -> Result<(), String> {
        if saved.kind != "file" || saved.log != self.log {
            return Err(format!("not a position in {}", self.log));
        }
        self.resume = Some(serde_json::from_value(saved.at.clone()).map_err(|e| e.to_string())?);
        Ok(())
    }

    fn watch(&mut self, _wake: Handle) -> Mode {
        Mode::Poll(Duration::from_millis(100))
    }

    fn read(&mut self, max: usize) -> Result<Vec<Entry>, FeedError> {
        let lines = self.follower().read_lines(max).map_err(|e| match e {
            FollowError::Missing { .. } => FeedError::Missing(e.to_string()),
            FollowError::Unreachable { .. } => FeedError::Unreachable(e.to_string()),
            FollowError::Io { .. } => FeedError::Other(e.to_string()),
        })?;
        for event in self.follower().take_events() {
            let warning = matches!(event, FollowEvent::CursorLost { .. });
            self.notices.push(Notice {
                warning,
                text: format!("{event:?}"),
            });
        }
        Ok(lines
            .into_iter()
            .map(|line| match line {
                Line::Complete { bytes, .. } => Entry::Record(bytes),
                Line::TooLong { len, .. } => Entry::TooLong { len },
            })
            .collect())
    }

    fn position(&self) -> Option<Position> {
        let cursor = self
            .follower
            .as_ref()
            .and_then(Follower::cursor)
            .or(self.resume)?;
        Some(Position {
            kind: "file".into(),
            log: self.log.clone(),
            seq: cursor.offset,
            at: serde_json::to_value(cursor).expect("a cursor serializes"),
        })
    }

    fn unread(&mut self, count_max: u64) -> Option<Unread> {
        self.follower().unread(count_max).ok().flatten()
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }
}
