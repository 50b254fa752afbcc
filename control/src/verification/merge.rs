//! A streaming merge join of two sorted row streams, one per store.
//!
//! Both stores send their rows sorted by the same key; the merge holds one row of each side at
//! a time, so memory does not depend on the tenant's size. Each key is visited once: present
//! on both sides, only on the left (the source: missing on the target) or only on the right
//! (extra on the target). A side whose keys do not strictly increase is an error, never a
//! wrong verdict: the merge would otherwise report rows as missing that are merely out of
//! place.

use std::cmp::Ordering;

use futures::{Stream, StreamExt};

use crate::error::ControlError;

/// One step of the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paired<T> {
    /// The key is on both sides.
    Both(T, T),
    /// Only the left side (the source) has the key.
    Left(T),
    /// Only the right side (the target) has the key.
    Right(T),
}

/// One side of the merge: its rows, the key of each, and the last key seen.
struct Side<S, K> {
    name: String,
    rows: S,
    last: Option<K>,
}

impl<T, K, S> Side<S, K>
where
    S: Stream<Item = Result<T, ControlError>> + Unpin,
    K: Ord + Clone + std::fmt::Debug,
{
    /// The next row, checking that its key is above the previous one.
    async fn next(&mut self, key: &impl Fn(&T) -> K) -> Result<Option<T>, ControlError> {
        let Some(row) = self.rows.next().await.transpose()? else {
            return Ok(None);
        };
        let current = key(&row);
        if let Some(last) = &self.last {
            if current <= *last {
                return Err(ControlError::Internal(format!(
                    "store {:?} sent rows out of key order ({current:?} after {last:?})",
                    self.name
                )));
            }
        }
        self.last = Some(current);
        Ok(Some(row))
    }
}

/// Merges `left` and `right` (each sorted by `key`, strictly increasing) and calls `visit`
/// once per key. `left_name` and `right_name` name the sides in errors.
pub async fn merge_join<T, K, L, R>(
    (left_name, left): (&str, L),
    (right_name, right): (&str, R),
    key: impl Fn(&T) -> K,
    mut visit: impl FnMut(Paired<T>),
) -> Result<(), ControlError>
where
    L: Stream<Item = Result<T, ControlError>> + Unpin,
    R: Stream<Item = Result<T, ControlError>> + Unpin,
    K: Ord + Clone + std::fmt::Debug,
{
    let mut left = Side {
        name: left_name.to_string(),
        rows: left,
        last: None,
    };
    let mut right = Side {
        name: right_name.to_string(),
        rows: right,
        last: None,
    };
    let mut l = left.next(&key).await?;
    let mut r = right.next(&key).await?;
    loop {
        match (l.take(), r.take()) {
            (None, None) => return Ok(()),
            (Some(a), None) => {
                visit(Paired::Left(a));
                l = left.next(&key).await?;
            }
            (None, Some(b)) => {
                visit(Paired::Right(b));
                r = right.next(&key).await?;
            }
            (Some(a), Some(b)) => match key(&a).cmp(&key(&b)) {
                Ordering::Less => {
                    visit(Paired::Left(a));
                    l = left.next(&key).await?;
                    r = Some(b);
                }
                Ordering::Greater => {
                    visit(Paired::Right(b));
                    l = Some(a);
                    r = right.next(&key).await?;
                }
                Ordering::Equal => {
                    visit(Paired::Both(a, b));
                    l = left.next(&key).await?;
                    r = right.next(&key).await?;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn rows(keys: &[i32]) -> impl Stream<Item = Result<i32, ControlError>> + Unpin {
        stream::iter(keys.iter().copied().map(Ok).collect::<Vec<_>>())
    }

    async fn merged(left: &[i32], right: &[i32]) -> Result<Vec<Paired<i32>>, ControlError> {
        let mut out = Vec::new();
        merge_join(
            ("source", rows(left)),
            ("target", rows(right)),
            |k| *k,
            |p| out.push(p),
        )
        .await?;
        Ok(out)
    }

    #[tokio::test]
    async fn pairs_equal_keys_and_names_the_rest() {
        let out = merged(&[1, 2, 4, 6], &[2, 3, 4, 7, 8]).await.unwrap();
        assert_eq!(
            out,
            [
                Paired::Left(1),
                Paired::Both(2, 2),
                Paired::Right(3),
                Paired::Both(4, 4),
                Paired::Left(6),
                Paired::Right(7),
                Paired::Right(8),
            ]
        );
    }

    #[tokio::test]
    async fn empty_sides() {
        assert!(merged(&[], &[]).await.unwrap().is_empty());
        assert_eq!(merged(&[1], &[]).await.unwrap(), [Paired::Left(1)]);
        assert_eq!(merged(&[], &[5]).await.unwrap(), [Paired::Right(5)]);
    }

    #[tokio::test]
    async fn refuses_rows_out_of_order_or_repeated() {
        let error = merged(&[1, 3, 2], &[1, 2, 3]).await.unwrap_err();
        assert_eq!(error.kind(), "InternalError");
        assert!(error.to_string().contains("\"source\""), "{error}");
        let error = merged(&[1, 2], &[1, 1]).await.unwrap_err();
        assert!(error.to_string().contains("\"target\""), "{error}");
    }

    #[tokio::test]
    async fn a_failing_stream_fails_the_merge() {
        let failing = stream::iter(vec![
            Ok(1),
            Err(ControlError::store_unavailable("target", "gone")),
        ]);
        let error = merge_join(
            ("source", rows(&[1, 2])),
            ("target", failing),
            |k| *k,
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(error.kind(), "StoreUnavailableError");
    }
}
