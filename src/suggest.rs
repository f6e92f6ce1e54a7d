//! "Did you mean ...?" for misspelt names.
//!
//! Used wherever a user names something that must exist (a column in a mapping
//! file, a group, a member code): the hint names the closest existing spelling.

/// The candidate closest to `word` by edit distance, if it is close enough to be
/// a plausible typo (at most a third of the word's length, and at least 1).
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb)).min(above + 1).min(row[j] + 1);
            diag = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_and_ignores_strangers() {
        let names = ["period", "partner", "product", "value"];
        assert_eq!(closest("partnr", names), Some("partner"));
        assert_eq!(closest("Period", names), Some("period"));
        assert_eq!(closest("tonnage", names), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
