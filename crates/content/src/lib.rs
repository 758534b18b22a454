//! The body of a post or a comment: trimmed text of at most 500 characters and up to
//! four media items, validated once here for both the post and the engagement service.
//! [`MediaDoc`] is how a media item is stored in either service's documents.

use serde::{Deserialize, Serialize};
use social_proto::common::v1::Media;

use social_kit::{error::Violations, validate};

/// Most characters (Unicode scalar values) in a post or comment.
pub const MAX_CONTENT_CHARS: usize = 500;
/// Most media items on one post or comment.
pub const MAX_MEDIA: usize = 4;
/// Largest width or height, in pixels.
pub const MAX_DIMENSION: i32 = 16384;
/// Most paths in an update's mask (`content`, `media`, `*`).
const MAX_MASK_PATHS: usize = 3;

/// A stored media item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaDoc {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub thumbnail_url: String,
    pub width: i32,
    pub height: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

impl From<MediaDoc> for Media {
    fn from(m: MediaDoc) -> Self {
        Self {
            r#type: m.kind,
            url: m.url,
            thumbnail_url: m.thumbnail_url,
            width: m.width,
            height: m.height,
            duration: m.duration,
        }
    }
}

/// Validates text: at most 500 characters as sent, stored trimmed. Records under
/// `field`.
pub fn text(field: &str, content: &str, v: &mut Violations) -> String {
    let (trimmed, fits) = validate::trimmed(content, MAX_CONTENT_CHARS);
    v.check(field, fits);
    trimmed.to_owned()
}

/// Validates media items; violations are named `<field>[i].<name>`. Of more than
/// [`MAX_MEDIA`] items, the count is refused and only the first [`MAX_MEDIA`] are looked
/// at: a flood costs what a full list does.
pub fn media(field: &str, items: &[Media], v: &mut Violations) -> Vec<MediaDoc> {
    if items.len() > MAX_MEDIA {
        v.add(field, format!("must have at most {MAX_MEDIA} items"));
    }
    items
        .iter()
        .take(MAX_MEDIA)
        .enumerate()
        .map(|(i, m)| {
            let at = |name: &str| format!("{field}[{i}].{name}");
            let kind = m.r#type.trim().to_ascii_lowercase();
            match kind.as_str() {
                "image" => {
                    if m.duration.is_some() {
                        v.add(at("duration"), "must be absent for an image");
                    }
                }
                "video" | "gif" => match m.duration {
                    None => v.add(at("duration"), format!("is required for a {kind}")),
                    Some(d) if !(d.is_finite() && d > 0.0) => {
                        v.add(at("duration"), "must be more than 0 seconds")
                    }
                    Some(_) => {}
                },
                "" => v.add(at("type"), "is required: image, video or gif"),
                _ => v.add(at("type"), "must be image, video or gif"),
            }
            let (url, valid) = validate::optional_url(&m.url);
            let required = || match url {
                "" => Err("is required: an absolute http or https URL".to_owned()),
                _ => Ok(()),
            };
            v.check(&at("url"), valid.and_then(|()| required()));
            let (thumbnail_url, valid) = validate::optional_url(&m.thumbnail_url);
            v.check(&at("thumbnail_url"), valid);
            for (name, value) in [("width", m.width), ("height", m.height)] {
                if !(1..=MAX_DIMENSION).contains(&value) {
                    v.add(at(name), format!("must be 1 to {MAX_DIMENSION} pixels"));
                }
            }
            MediaDoc {
                kind,
                url: url.to_owned(),
                thumbnail_url: thumbnail_url.to_owned(),
                width: m.width,
                height: m.height,
                duration: m.duration,
            }
        })
        .collect()
}

/// Text may be empty only when media is present.
pub fn require_something(field: &str, text: &str, media: &[MediaDoc], v: &mut Violations) {
    if text.is_empty() && media.is_empty() {
        v.add(field, "must not be empty unless media is attached");
    }
}

/// `@usernames` mentioned in `text`: distinct (case-insensitively), in order, at most
/// `max`. A mention is `@` not preceded by a word character, then 3-30 of `[A-Za-z0-9_]`.
pub fn mentions(text: &str, max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() && out.len() < max {
        if bytes[i] == b'@' && (i == 0 || !word(bytes[i - 1])) {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && word(bytes[end]) {
                end += 1;
            }
            let name = &text[start..end];
            if (3..=30).contains(&name.len()) && !out.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                out.push(name.to_owned());
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// A validated update of a post's or comment's body.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyUpdate {
    /// The fields to `$set`.
    pub set: bson::Document,
    /// What the stored document must still satisfy for the update to leave it non-empty
    /// (a filter to add to the update's): clearing the text requires media, removing the
    /// media requires text. Another device may have changed the field this update keeps
    /// since it was read; the condition makes the rule hold in the write itself.
    pub guard: bson::Document,
}

impl BodyUpdate {
    /// The violation to report when the guard did not hold (the document exists).
    pub fn emptied(resource: &str) -> social_kit::Error {
        social_kit::Error::invalid(
            format!("{resource}.content"),
            "must not be empty unless media is attached (another change removed what \
             this update keeps)",
        )
    }
}

/// The update of a post's or comment's body (`resource` is `post` or `comment`),
/// validated against its current text and media. Mask paths: `content`, `media`
/// (AIP-134: no mask means every field the request populates; `*` means both).
pub fn update(
    resource: &str,
    content: &str,
    media: &[Media],
    paths: &[String],
    current: (&str, &[MediaDoc]),
) -> social_kit::Result<BodyUpdate> {
    let mut v = Violations::default();
    let paths: Vec<&str> = if paths.is_empty() {
        let mut p = Vec::new();
        if !content.is_empty() {
            p.push("content");
        }
        if !media.is_empty() {
            p.push("media");
        }
        p
    } else if paths.len() > MAX_MASK_PATHS {
        v.add(
            "update_mask.paths",
            format!("must name at most {MAX_MASK_PATHS} paths: content, media or *"),
        );
        Vec::new()
    } else if paths.iter().any(|p| p == "*") {
        vec!["content", "media"]
    } else {
        paths.iter().map(String::as_str).collect()
    };
    let (mut new_text, mut new_media) = (current.0.to_owned(), current.1.to_vec());
    let mut set = bson::Document::new();
    for path in paths {
        match path {
            "content" => {
                new_text = text(&format!("{resource}.content"), content, &mut v);
                set.insert("content", new_text.clone());
            }
            "media" => {
                new_media = self::media(&format!("{resource}.media"), media, &mut v);
                set.insert(
                    "media",
                    bson::serialize_to_bson(&new_media).map_err(social_kit::Error::internal)?,
                );
            }
            other => v.add(
                "update_mask.paths",
                format!("`{}` cannot be updated; use content or media", validate::quoted(other)),
            ),
        }
    }
    require_something(&format!("{resource}.content"), &new_text, &new_media, &mut v);
    v.finish()?;
    let mut guard = bson::Document::new();
    match (set.contains_key("content"), set.contains_key("media")) {
        (true, false) if new_text.is_empty() => {
            // At least one media item (every stored item has a `type`).
            guard.insert("media", bson::doc! { "$elemMatch": { "type": { "$exists": true } } });
        }
        (false, true) if new_media.is_empty() => {
            guard.insert("content", bson::doc! { "$ne": "" });
        }
        _ => {}
    }
    Ok(BodyUpdate { set, guard })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: &str, duration: Option<f64>) -> Media {
        Media {
            r#type: kind.into(),
            url: "https://cdn.example.com/x".into(),
            thumbnail_url: String::new(),
            width: 640,
            height: 480,
            duration,
        }
    }

    #[test]
    fn media_rules() {
        let mut v = Violations::default();
        let ok = media(
            "media",
            &[item("image", None), item("video", Some(3.5)), item("GIF", Some(1.0))],
            &mut v,
        );
        assert!(v.finish().is_ok());
        assert_eq!(ok[2].kind, "gif");

        let mut v = Violations::default();
        media(
            "media",
            &[
                item("image", Some(1.0)),
                item("video", None),
                item("audio", None),
                item("gif", Some(0.0)),
                item("image", None),
            ],
            &mut v,
        );
        let fields: Vec<String> = match v.finish() {
            Err(social_kit::Error::InvalidArgument(vs)) => {
                vs.into_iter().map(|x| x.field).collect()
            }
            _ => panic!(),
        };
        assert_eq!(
            fields,
            [
                "media",
                "media[0].duration",
                "media[1].duration",
                "media[2].type",
                "media[3].duration"
            ]
        );
    }

    #[test]
    fn an_update_that_empties_one_half_requires_the_other() {
        let image = media("media", &[item("image", None)], &mut Violations::default());
        let clear_text = update("post", "", &[], &["content".into()], ("hi", &image)).unwrap();
        assert!(clear_text.guard.contains_key("media"));
        let clear_media = update("post", "", &[], &["media".into()], ("hi", &image)).unwrap();
        assert!(clear_media.guard.contains_key("content"));
        let new_text = update("post", "hello", &[], &["content".into()], ("", &image)).unwrap();
        assert!(new_text.guard.is_empty());
        assert!(update("post", "", &[], &["*".into()], ("hi", &image)).is_err());
    }

    #[test]
    fn mentions_are_distinct_and_capped() {
        assert_eq!(mentions("hi @Bob and @bob, @carol! mail a@b.c @x", 10), ["Bob", "carol"]);
        let many: String = (0..15).map(|i| format!("@user{i:02} ")).collect();
        assert_eq!(mentions(&many, 10).len(), 10);
    }
}
