//! Which sessions have an idle-clock write (a slide) on its way to the store from this
//! instance, so that the requests arriving meanwhile, which still read the record from
//! before it, do not each seal and send one more that the store's compare-and-set would
//! refuse (at 256 connections on one session: some 150 such writes per slide, against one).
//!
//! Rules:
//! 1. At most one slide per session is in flight per instance; a request that finds one
//!    leaves the idle clock to it.
//! 2. The mark goes when the write ends, whether it wrote, lost the compare-and-set, failed
//!    or was dropped: a failed slide is tried again by the next request that is due.
//! 3. Only a request due for a slide looks here (once per interval per session, and the
//!    requests that overlap its write), never an ordinary one.

use std::sync::Arc;

use super::shards::Shards;

pub struct Slides(Shards<()>);

/// A slide in flight: the mark of its session, taken off when dropped.
pub struct Sliding {
    slides: Arc<Slides>,
    key: Box<str>,
}

impl Slides {
    pub fn new() -> Arc<Slides> {
        Arc::new(Slides(Shards::new()))
    }

    /// Marks a slide of the session under `key` as on its way, unless one already is.
    pub fn begin(self: &Arc<Self>, key: &str) -> Option<Sliding> {
        let mut shard = self.0.lock(key);
        if shard.contains_key(key) {
            return None;
        }
        shard.insert(key.into(), ());
        Some(Sliding {
            slides: Arc::clone(self),
            key: key.into(),
        })
    }
}

impl Drop for Sliding {
    fn drop(&mut self) {
        self.slides.0.lock(&self.key).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_slide_of_a_session_waits_for_the_first_to_end_and_others_do_not() {
        let slides = Slides::new();
        let first = slides.begin("s:a").expect("the first slide goes");
        assert!(slides.begin("s:a").is_none(), "one in flight per session");
        let other = slides.begin("s:b");
        assert!(other.is_some(), "another session's slide is not held up");
        drop(first);
        assert!(
            slides.begin("s:a").is_some(),
            "the mark goes with the slide"
        );
    }
}
