//! An rss job's keep and drop rules: `text` matches anywhere in an entry,
//! `title:text`, `content:text` (summary or content), `author:text` and
//! `category:text` match that field; matching is a case-insensitive
//! "contains", so every rule control accepts is one the worker can apply.
//! With keep rules an entry must match one of them; an entry matching a
//! drop rule is left out.

use super::feed::Entry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Any,
    Title,
    Content,
    Author,
    Category,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    field: Field,
    /// Lowercase.
    text: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    keep: Vec<Rule>,
    drop: Vec<Rule>,
}

impl Filters {
    pub fn new(keep: &[String], drop: &[String]) -> Self {
        let rules = |lines: &[String]| lines.iter().map(|l| rule(l)).filter(|r| !r.text.is_empty()).collect();
        Self { keep: rules(keep), drop: rules(drop) }
    }

    /// Whether `entry` goes to the index.
    pub fn admits(&self, entry: &Entry) -> bool {
        if self.keep.is_empty() && self.drop.is_empty() {
            return true;
        }
        let kept = self.keep.is_empty() || self.keep.iter().any(|r| matches(r, entry));
        kept && !self.drop.iter().any(|r| matches(r, entry))
    }
}

fn rule(line: &str) -> Rule {
    let fields = [
        ("title:", Field::Title),
        ("content:", Field::Content),
        ("author:", Field::Author),
        ("category:", Field::Category),
    ];
    let trimmed = line.trim();
    for (prefix, field) in fields {
        if trimmed.len() >= prefix.len() && trimmed[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return Rule { field, text: trimmed[prefix.len()..].trim().to_lowercase() };
        }
    }
    Rule { field: Field::Any, text: trimmed.to_lowercase() }
}

fn matches(rule: &Rule, entry: &Entry) -> bool {
    let has = |text: Option<&str>| text.is_some_and(|t| t.to_lowercase().contains(&rule.text));
    let title = || has(entry.title.as_deref());
    let content = || has(entry.summary.as_deref()) || has(entry.content.as_deref());
    let author = || entry.authors.iter().any(|p| has(p.name.as_deref()) || has(p.email.as_deref()));
    let category = || entry.categories.iter().any(|c| has(Some(&c.term)) || has(c.label.as_deref()));
    match rule.field {
        Field::Title => title(),
        Field::Content => content(),
        Field::Author => author(),
        Field::Category => category(),
        Field::Any => title() || content() || author() || category(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::rss::feed::{Category, Person};

    fn entry(title: &str, author: &str, category: &str) -> Entry {
        Entry {
            title: Some(title.into()),
            summary: Some("<p>About Rust and more</p>".into()),
            authors: vec![Person { name: Some(author.into()), ..Person::default() }],
            categories: vec![Category { term: category.into(), ..Category::default() }],
            ..Entry::default()
        }
    }

    fn lines(rules: &[&str]) -> Vec<String> {
        rules.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn keep_and_drop_rules_by_field_or_anywhere() {
        let release = entry("Rust 1.90 released", "Ferris", "release");
        let sponsored = entry("Sponsored: buy now", "Ads", "promo");
        let none = Filters::new(&[], &[]);
        assert!(none.admits(&release) && none.admits(&sponsored));
        let keep = Filters::new(&lines(&["title:RUST"]), &[]);
        assert!(keep.admits(&release) && !keep.admits(&sponsored));
        let drop = Filters::new(&[], &lines(&["Sponsored", "category:promo"]));
        assert!(drop.admits(&release) && !drop.admits(&sponsored));
        let both = Filters::new(&lines(&["content:rust"]), &lines(&["author:ads"]));
        assert!(both.admits(&release) && !both.admits(&sponsored), "drop wins over keep");
        assert!(Filters::new(&lines(&["category:release"]), &[]).admits(&release));
        assert!(!Filters::new(&lines(&["author:nobody"]), &[]).admits(&release));
        // An empty rule matches nothing and filters nothing.
        assert!(Filters::new(&lines(&["title:"]), &[]).admits(&release));
    }
}
