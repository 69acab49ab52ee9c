//! Turning a knowledge-base source (plain text, Markdown, HTML or PDF bytes) into text the
//! chunker can split: Markdown-like, with headings, paragraphs, lists and code blocks kept,
//! so that chunks follow the document's structure and can cite a section (and a PDF page).
//!
//! Sources are uploaded by users or fetched from the web, so every path here treats its input
//! as hostile: the input size is capped before any work, the output size is capped, HTML is
//! converted by a streaming tokenizer (no tree, so nesting depth costs no stack or memory),
//! and the PDF parser runs with decompression limits and behind `catch_unwind`.
//!
//! Text encodings: a byte-order mark wins, then a declared `charset` (from the content type or,
//! for HTML, a `<meta charset>` in the first 1024 bytes); otherwise the bytes must be UTF-8.
//! Invalid input is rejected with its byte offset rather than decoded lossily: a silently
//! mangled document would be cited back to users, and the uploader can fix the file.

use std::fmt::Write as _;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use encoding_rs::Encoding;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer};

/// What kind of source the bytes are; decides how they are turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Text,
    Markdown,
    Html,
    Pdf,
}

/// Bounds on the work one extraction may do. The defaults suit a gateway that accepts
/// uploads of documentation pages and reports, not books of scans.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Inputs larger than this are refused before any parsing.
    pub max_input_bytes: usize,
    /// The extracted text may be at most this long (a PDF's compressed streams can expand).
    pub max_output_bytes: usize,
    /// PDFs with more pages than this are refused.
    pub max_pdf_pages: usize,
    /// Most bytes any one PDF stream (and any one page's content) may decompress to.
    pub max_pdf_stream_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 32 << 20,
            max_output_bytes: 16 << 20,
            max_pdf_pages: 2_000,
            max_pdf_stream_bytes: 32 << 20,
        }
    }
}

/// Where one PDF page's text lies in [`Extracted::text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSpan {
    /// 1-based page number, as a reader would cite it.
    pub page: u32,
    /// Byte range of the page's text in [`Extracted::text`].
    pub range: Range<usize>,
}

/// A source turned into text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The kind the bytes were treated as (declared or sniffed).
    pub kind: SourceKind,
    /// HTML `<title>`, PDF `/Title`, or the first level-1 heading; `None` if there is none.
    pub title: Option<String>,
    /// Markdown-like text: `\n` line endings, blank lines between blocks, `#` headings, fenced
    /// code blocks. Never empty or all whitespace (that is [`ExtractError::NoText`]).
    pub text: String,
    /// For PDFs, each page's span in `text`, in page order (pages without text are omitted).
    pub pages: Option<Vec<PageSpan>>,
}

/// Why a source could not be turned into text. Each message is fit to show the uploader.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("the source is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("the source's text would be over {max} bytes")]
    OutputTooLarge { max: usize },
    #[error("content type {0:?} is not supported (text, Markdown, HTML or PDF)")]
    Unsupported(String),
    #[error("the source looks binary (it has NUL bytes) and is not a PDF")]
    Binary,
    #[error("unknown character set {0:?}")]
    UnknownCharset(String),
    #[error("the source is not valid {encoding} (first bad byte at offset {offset})")]
    InvalidEncoding { encoding: &'static str, offset: usize },
    #[error("the PDF could not be read: {0}")]
    Pdf(String),
    #[error("the PDF has {pages} pages; at most {max} are accepted")]
    TooManyPages { pages: usize, max: usize },
    #[error("no text could be extracted (an empty file, or a PDF of scanned images?)")]
    NoText,
}

/// Decides the source's kind from its declared content type, its file name and its bytes.
///
/// A declared specific type wins (`text/markdown`, `text/html`, `application/pdf`, `text/*`);
/// `text/plain` becomes Markdown for a `.md`/`.markdown` file, since browsers and `curl`
/// upload Markdown as plain text. An absent or generic (`application/octet-stream`) type is
/// sniffed: `%PDF-` near the start, `<!doctype html`/`<html` at the start, then the file
/// name's extension, then text. Other declared types (images, archives) are refused.
pub fn detect_kind(
    content_type: Option<&str>,
    filename: Option<&str>,
    bytes: &[u8],
) -> Result<SourceKind, ExtractError> {
    let ext = filename.and_then(|f| f.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase());
    let is_md_name = matches!(ext.as_deref(), Some("md" | "markdown" | "mdown" | "mkd"));
    let essence = content_type.map(mime_essence).unwrap_or_default();
    match essence.as_str() {
        "text/markdown" | "text/x-markdown" => return Ok(SourceKind::Markdown),
        "text/html" | "application/xhtml+xml" => return Ok(SourceKind::Html),
        "application/pdf" | "application/x-pdf" => return Ok(SourceKind::Pdf),
        "text/plain" if is_md_name => return Ok(SourceKind::Markdown),
        "application/json" | "application/xml" => return Ok(SourceKind::Text),
        e if e.starts_with("text/") => return Ok(SourceKind::Text),
        "" | "application/octet-stream" | "binary/octet-stream" => {}
        other => return Err(ExtractError::Unsupported(other.to_owned())),
    }
    if is_pdf(bytes) {
        return Ok(SourceKind::Pdf);
    }
    if looks_like_html(bytes) {
        return Ok(SourceKind::Html);
    }
    match ext.as_deref() {
        _ if is_md_name => Ok(SourceKind::Markdown),
        Some("html" | "htm" | "xhtml") => Ok(SourceKind::Html),
        _ if Encoding::for_bom(bytes).is_none() && bytes.iter().take(8192).any(|&b| b == 0) => {
            Err(ExtractError::Binary)
        }
        _ => Ok(SourceKind::Text),
    }
}

/// Detects the kind (see [`detect_kind`]) and extracts the text (see [`extract_as`]).
pub fn extract(
    bytes: &[u8],
    content_type: Option<&str>,
    filename: Option<&str>,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    check_input_size(bytes, limits)?;
    let kind = detect_kind(content_type, filename, bytes)?;
    extract_as(kind, bytes, content_type.and_then(charset_param).as_deref(), limits)
}

/// Extracts the text of bytes already known to be of `kind`. `charset` is a declared
/// character set label (e.g. from `Content-Type: text/html; charset=iso-8859-1`).
pub fn extract_as(
    kind: SourceKind,
    bytes: &[u8],
    charset: Option<&str>,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    check_input_size(bytes, limits)?;
    let extracted = match kind {
        SourceKind::Text | SourceKind::Markdown => {
            let text = normalise_text(&decode(bytes, charset)?);
            let title = if kind == SourceKind::Markdown { markdown_title(&text) } else { None };
            Extracted { kind, title, text, pages: None }
        }
        SourceKind::Html => {
            let meta = if charset.is_none() { meta_charset(bytes) } else { None };
            let html = decode(bytes, charset.or(meta.as_deref()))?;
            let (title, text) = html_to_markdown(&html, limits.max_output_bytes)?;
            Extracted { kind, title, text, pages: None }
        }
        SourceKind::Pdf => extract_pdf(bytes, limits)?,
    };
    if extracted.text.len() > limits.max_output_bytes {
        return Err(ExtractError::OutputTooLarge { max: limits.max_output_bytes });
    }
    if extracted.text.trim().is_empty() {
        return Err(ExtractError::NoText);
    }
    Ok(extracted)
}

fn check_input_size(bytes: &[u8], limits: &Limits) -> Result<(), ExtractError> {
    if bytes.len() > limits.max_input_bytes {
        return Err(ExtractError::TooLarge { size: bytes.len(), max: limits.max_input_bytes });
    }
    Ok(())
}

/// `Text/HTML; charset=UTF-8` → `text/html`.
fn mime_essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// `text/html; charset="utf-8"` → `utf-8`.
fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim().eq_ignore_ascii_case("charset").then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// PDF readers accept the header anywhere in the first kilobyte, so we do too.
fn is_pdf(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(1024)].windows(5).any(|w| w == b"%PDF-")
}

fn looks_like_html(bytes: &[u8]) -> bool {
    let (_, bom_len) = Encoding::for_bom(bytes).unwrap_or((encoding_rs::UTF_8, 0));
    let head = &bytes[bom_len..bytes.len().min(bom_len + 1024)];
    let start = head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len());
    let head = head[start..].to_ascii_lowercase();
    head.starts_with(b"<!doctype html")
        || head.starts_with(b"<html")
        // A leading comment or XML declaration before the real start.
        || ((head.starts_with(b"<!--") || head.starts_with(b"<?xml")) && head.windows(5).any(|w| w == b"<html"))
}

/// Finds `charset=...` in the first 1024 bytes, as the HTML encoding-sniffing prescan does
/// (simplified: any `charset=`, which covers both `<meta charset>` and `http-equiv`).
fn meta_charset(bytes: &[u8]) -> Option<String> {
    let head = bytes[..bytes.len().min(1024)].to_ascii_lowercase();
    let at = head.windows(8).position(|w| w == b"charset=")? + 8;
    let rest = &head[at..];
    let rest = rest.strip_prefix(b"\"").or_else(|| rest.strip_prefix(b"'")).unwrap_or(rest);
    let len = rest.iter().position(|b| !(b.is_ascii_alphanumeric() || b"-_:.".contains(b))).unwrap_or(rest.len());
    (len > 0).then(|| String::from_utf8_lossy(&rest[..len]).into_owned())
}

/// Decodes bytes to text: BOM first, then the declared charset, else strict UTF-8.
fn decode(bytes: &[u8], charset: Option<&str>) -> Result<String, ExtractError> {
    let (encoding, body) = if let Some((encoding, bom_len)) = Encoding::for_bom(bytes) {
        (encoding, &bytes[bom_len..])
    } else if let Some(label) = charset {
        let encoding =
            Encoding::for_label(label.as_bytes()).ok_or_else(|| ExtractError::UnknownCharset(label.to_owned()))?;
        (encoding, bytes)
    } else {
        (encoding_rs::UTF_8, bytes)
    };
    if encoding == encoding_rs::UTF_8 {
        return match std::str::from_utf8(body) {
            Ok(text) => Ok(text.to_owned()),
            Err(e) => Err(ExtractError::InvalidEncoding { encoding: "UTF-8", offset: e.valid_up_to() }),
        };
    }
    // Single-byte encodings never fail; UTF-16 and the CJK ones can.
    match encoding.decode_without_bom_handling_and_without_replacement(body) {
        Some(text) => Ok(text.into_owned()),
        None => {
            let (text, _) = encoding.decode_without_bom_handling(body);
            let offset = text.find('\u{FFFD}').unwrap_or(0);
            Err(ExtractError::InvalidEncoding { encoding: encoding.name(), offset })
        }
    }
}

/// `\r\n` and lone `\r` become `\n`; NULs (never meaningful in text, and some stores reject
/// them) are dropped.
fn normalise_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\0' => {}
            c => out.push(c),
        }
    }
    out
}

/// The first ATX level-1 heading outside fenced code, as a Markdown document's title.
fn markdown_title(text: &str) -> Option<String> {
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") {
            fence = Some("```");
        } else if trimmed.starts_with("~~~") {
            fence = Some("~~~");
        } else if let Some(title) = trimmed.strip_prefix("# ") {
            let title = title.trim().trim_end_matches('#').trim();
            if !title.is_empty() {
                return Some(title.to_owned());
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Elements whose content is noise for a knowledge base: code that runs, styling, navigation
/// and page chrome, embedded widgets. All are non-void, so they have an end tag to wait for.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "nav", "footer", "svg", "math", "iframe", "object", "canvas", "select",
    "button", "textarea",
];
/// Elements that end one block of text and start another.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "aside",
    "blockquote",
    "figure",
    "figcaption",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "dl",
    "dt",
    "dd",
    "address",
    "details",
    "summary",
    "fieldset",
    "legend",
    "hr",
    "body",
    "html",
    "center",
    "form",
    "caption",
];
/// Elements with no end tag: never enter a skip on one, or it would never end.
const VOID: &[&str] =
    &["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr", "param"];
/// Nested lists deeper than this are indented no further, so output stays near input size.
const MAX_LIST_INDENT: usize = 6;

/// Converts HTML to Markdown-like text; returns `(title, text)`.
///
/// Works on the token stream of html5ever's spec-compliant tokenizer (entities, comments,
/// raw-text elements and malformed markup handled as browsers do) rather than on a DOM:
/// block boundaries are all the chunker needs, and without a tree, deeply nested or
/// mis-nested markup costs neither stack nor extra memory.
fn html_to_markdown(html: &str, max_output: usize) -> Result<(Option<String>, String), ExtractError> {
    let sink = HtmlSink { state: std::cell::RefCell::new(HtmlState::new(max_output)) };
    let tokenizer = Tokenizer::new(sink, Default::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // We never ask the tokenizer to pause for a script, so one feed consumes everything.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let state = tokenizer.sink.state.into_inner();
    if state.overflow {
        return Err(ExtractError::OutputTooLarge { max: max_output });
    }
    let title = state.title.or(state.first_h1).map(|t| collapse_ws(&t)).filter(|t| !t.is_empty());
    let text = state.out.trim_end().to_owned() + "\n";
    Ok((title, text))
}

struct HtmlSink {
    state: std::cell::RefCell<HtmlState>,
}

struct ListState {
    ordered: bool,
    next: u32,
}

struct HtmlState {
    out: String,
    max_output: usize,
    overflow: bool,
    title: Option<String>,
    in_title: bool,
    title_buf: String,
    first_h1: Option<String>,
    h1_buf: Option<String>,
    /// The skipped element we are inside, and how many of its kind are open.
    skip: Option<(String, usize)>,
    /// Level of the open heading, and where its `#` marker starts in `out`.
    heading: Option<(u8, usize)>,
    pre_depth: usize,
    pre_buf: String,
    pre_lang: Option<String>,
    lists: Vec<ListState>,
    inline_code: bool,
    /// Whitespace was seen and not yet written (collapsed to one space before the next text).
    pending_space: bool,
    /// Nothing but a line prefix (list marker, heading marker) has been written on this line.
    line_start: bool,
}

impl HtmlState {
    fn new(max_output: usize) -> Self {
        HtmlState {
            out: String::new(),
            max_output,
            overflow: false,
            title: None,
            in_title: false,
            title_buf: String::new(),
            first_h1: None,
            h1_buf: None,
            skip: None,
            heading: None,
            pre_depth: 0,
            pre_buf: String::new(),
            pre_lang: None,
            lists: Vec::new(),
            inline_code: false,
            pending_space: false,
            line_start: true,
        }
    }

    fn push(&mut self, s: &str) {
        if self.out.len() + s.len() > self.max_output {
            self.overflow = true;
            return;
        }
        self.out.push_str(s);
    }

    fn trim_trailing_spaces(&mut self) {
        let len = self.out.trim_end_matches([' ', '\t']).len();
        self.out.truncate(len);
    }

    /// Ends the current block: the next text starts after a blank line.
    fn block(&mut self) {
        self.trim_trailing_spaces();
        if !self.out.is_empty() {
            while !self.out.ends_with("\n\n") {
                self.out.push('\n');
            }
        }
        self.pending_space = false;
        self.line_start = true;
    }

    /// Ends the current line.
    fn newline(&mut self) {
        self.trim_trailing_spaces();
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
        self.pending_space = false;
        self.line_start = true;
    }

    fn text(&mut self, s: &str) {
        if self.in_title {
            self.title_buf.push_str(s);
            return;
        }
        if self.skip.is_some() {
            return;
        }
        if self.pre_depth > 0 {
            if self.pre_buf.len() + s.len() > self.max_output {
                self.overflow = true;
            } else {
                self.pre_buf.push_str(s);
            }
            return;
        }
        if let Some(h1) = &mut self.h1_buf {
            h1.push_str(s);
        }
        for word in s.split_inclusive(char::is_whitespace) {
            let trimmed = word.trim_end_matches(char::is_whitespace);
            if !trimmed.is_empty() {
                if self.pending_space && !self.line_start {
                    self.push(" ");
                }
                // A paragraph that begins with `#` or a backtick fence must not read as a heading
                // or code block to the chunker.
                if self.line_start && self.heading.is_none() && (trimmed.starts_with('#') || trimmed.starts_with("```"))
                {
                    self.push("\\");
                }
                self.push(trimmed);
                self.line_start = false;
                self.pending_space = false;
            }
            if trimmed.len() < word.len() {
                self.pending_space = true;
            }
        }
    }

    fn start_tag(&mut self, tag: &Tag) {
        let name: &str = &tag.name;
        if let Some((skipped, open)) = &mut self.skip {
            if skipped == name && !tag.self_closing {
                *open += 1;
            }
            return;
        }
        let hidden = tag.attrs.iter().any(|a| {
            let attr: &str = &a.name.local;
            attr == "hidden" || (attr == "aria-hidden" && a.value.eq_ignore_ascii_case("true"))
        });
        if (SKIPPED.contains(&name) || hidden) && !tag.self_closing && !VOID.contains(&name) {
            self.skip = Some((name.to_owned(), 1));
            return;
        }
        match name {
            "title" => {
                self.in_title = true;
                self.title_buf.clear();
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.close_heading();
                self.block();
                let level = name.as_bytes()[1] - b'0';
                let at = self.out.len();
                let marker = "#".repeat(usize::from(level)) + " ";
                self.push(&marker);
                self.heading = Some((level, at));
                if level == 1 && self.first_h1.is_none() {
                    self.h1_buf = Some(String::new());
                }
            }
            "pre" => {
                if self.pre_depth == 0 {
                    self.block();
                    self.pre_buf.clear();
                    self.pre_lang = None;
                }
                self.pre_depth += 1;
            }
            "code" if self.pre_depth > 0 && self.pre_lang.is_none() => {
                self.pre_lang = tag.attrs.iter().find(|a| &*a.name.local == "class").and_then(|a| {
                    a.value.split_whitespace().find_map(|c| {
                        c.strip_prefix("language-").or_else(|| c.strip_prefix("lang-")).map(str::to_owned)
                    })
                });
            }
            "code" if self.pre_depth > 0 => {}
            "code" | "kbd" | "samp" if !self.inline_code => {
                if self.pending_space && !self.line_start {
                    self.push(" ");
                }
                self.pending_space = false;
                self.push("`");
                self.line_start = false;
                self.inline_code = true;
            }
            "ul" | "ol" | "menu" => {
                if self.lists.is_empty() {
                    self.block();
                } else {
                    self.newline();
                }
                let start = tag
                    .attrs
                    .iter()
                    .find(|a| &*a.name.local == "start")
                    .and_then(|a| a.value.trim().parse().ok())
                    .unwrap_or(1);
                self.lists.push(ListState { ordered: name == "ol", next: start });
            }
            "li" => {
                self.newline();
                let depth = self.lists.len().max(1);
                let indent = "  ".repeat((depth - 1).min(MAX_LIST_INDENT));
                let marker = match self.lists.last_mut() {
                    Some(list) if list.ordered => {
                        let n = list.next;
                        list.next = list.next.saturating_add(1);
                        format!("{n}. ")
                    }
                    _ => "- ".to_owned(),
                };
                self.push(&indent);
                self.push(&marker);
                self.line_start = true;
            }
            "br" => {
                if self.pre_depth > 0 {
                    self.pre_buf.push('\n');
                } else if self.heading.is_some() || !self.lists.is_empty() {
                    self.pending_space = true;
                } else {
                    self.newline();
                }
            }
            "tr" => self.newline(),
            "td" | "th" => {
                if !self.line_start {
                    self.push(" |");
                }
                self.pending_space = true;
            }
            // Inside a list item, paragraphs and divs are only spacing: a blank line would end
            // the list for the chunker.
            _ if BLOCKS.contains(&name) => {
                if self.lists.is_empty() && self.heading.is_none() {
                    self.block();
                } else {
                    self.pending_space = true;
                }
            }
            _ => {}
        }
    }

    fn end_tag(&mut self, tag: &Tag) {
        let name: &str = &tag.name;
        if let Some((skipped, open)) = &mut self.skip {
            if skipped == name {
                *open -= 1;
                if *open == 0 {
                    self.skip = None;
                }
            }
            return;
        }
        match name {
            "title" => {
                self.in_title = false;
                if self.title.is_none() {
                    let t = collapse_ws(&self.title_buf);
                    if !t.is_empty() {
                        self.title = Some(t);
                    }
                }
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.close_heading();
                self.block();
            }
            "pre" if self.pre_depth > 0 => {
                self.pre_depth -= 1;
                if self.pre_depth == 0 {
                    self.flush_pre();
                }
            }
            "code" | "kbd" | "samp" if self.inline_code && self.pre_depth == 0 => {
                self.push("`");
                self.inline_code = false;
            }
            "ul" | "ol" | "menu" => {
                self.lists.pop();
                if self.lists.is_empty() {
                    self.block();
                } else {
                    self.newline();
                }
            }
            "tr" => self.newline(),
            _ if BLOCKS.contains(&name) => {
                if self.lists.is_empty() && self.heading.is_none() {
                    self.block();
                } else {
                    self.pending_space = true;
                }
            }
            _ => {}
        }
    }

    /// Ends an open heading; one with no text leaves no bare `#` behind.
    fn close_heading(&mut self) {
        if let Some((level, at)) = self.heading.take() {
            if self.out[at..].trim_end().len() <= usize::from(level) {
                self.out.truncate(at);
            }
        }
        if let Some(h1) = self.h1_buf.take() {
            let h1 = collapse_ws(&h1);
            if !h1.is_empty() {
                self.first_h1 = Some(h1);
            }
        }
    }

    /// Writes a finished `<pre>` as a fenced block whose fence is longer than any run of
    /// backticks inside it, so the chunker never sees the block end early.
    fn flush_pre(&mut self) {
        let body = std::mem::take(&mut self.pre_buf);
        // HTML drops a newline right after `<pre>`; trailing blank lines are layout.
        let body = body.strip_prefix('\n').unwrap_or(&body).trim_end();
        if body.trim().is_empty() {
            self.block();
            return;
        }
        let longest_run = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat((longest_run + 1).max(3));
        let lang = self.pre_lang.take().unwrap_or_default();
        let mut block = String::with_capacity(body.len() + 2 * fence.len() + lang.len() + 2);
        let _ = write!(block, "{fence}{lang}\n{body}\n{fence}");
        self.push(&block);
        self.block();
    }
}

impl TokenSink for HtmlSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut state = self.state.borrow_mut();
        if state.overflow {
            return TokenSinkResult::Continue;
        }
        match token {
            Token::CharacterTokens(text) => state.text(&text),
            Token::TagToken(tag) if tag.kind == TagKind::StartTag => {
                state.start_tag(&tag);
                // Without a tree builder, the tokenizer must be told which elements hold raw
                // text, or a `<` inside a script would start a tag.
                if !tag.self_closing {
                    match &*tag.name {
                        "script" => return TokenSinkResult::RawData(RawKind::ScriptData),
                        "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => {
                            return TokenSinkResult::RawData(RawKind::Rawtext)
                        }
                        "title" | "textarea" => return TokenSinkResult::RawData(RawKind::Rcdata),
                        "plaintext" => return TokenSinkResult::Plaintext,
                        _ => {}
                    }
                }
            }
            Token::TagToken(tag) => state.end_tag(&tag),
            Token::EOFToken => {
                if state.pre_depth > 0 {
                    state.pre_depth = 0;
                    state.flush_pre();
                }
                state.close_heading();
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// PDF

/// Extracts each page's text with `lopdf`, pages separated by a blank line.
///
/// `lopdf` is pure Rust and bounds nesting and decompression, but a parser of a format this
/// loose can still hit an unforeseen panic on a crafted file; `catch_unwind` turns that into
/// an error for this one upload instead of a crashed request handler.
fn extract_pdf(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    match catch_unwind(AssertUnwindSafe(|| extract_pdf_unguarded(bytes, limits))) {
        Ok(result) => result,
        Err(_) => Err(ExtractError::Pdf("the PDF parser failed on this file".to_owned())),
    }
}

fn extract_pdf_unguarded(bytes: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let options = lopdf::LoadOptions { max_decompressed_size: Some(limits.max_pdf_stream_bytes), ..Default::default() };
    let doc = lopdf::Document::load_mem_with_options(bytes, options).map_err(|e| ExtractError::Pdf(e.to_string()))?;
    if doc.is_encrypted() {
        return Err(ExtractError::Pdf("it is encrypted".to_owned()));
    }
    let pages = doc.get_pages();
    if pages.len() > limits.max_pdf_pages {
        return Err(ExtractError::TooManyPages { pages: pages.len(), max: limits.max_pdf_pages });
    }
    let mut text = String::new();
    let mut spans = Vec::new();
    let mut last_error = None;
    for (&page, &page_id) in &pages {
        // One unreadable page (an odd font encoding, a damaged stream) should not lose the rest.
        let page_text = match pdf_page_text(&doc, page_id, limits.max_pdf_stream_bytes) {
            Ok(t) => normalise_pdf_page(&t),
            Err(e) => {
                last_error = Some(e.to_string());
                continue;
            }
        };
        if page_text.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        if text.len() + page_text.len() > limits.max_output_bytes {
            return Err(ExtractError::OutputTooLarge { max: limits.max_output_bytes });
        }
        let start = text.len();
        text.push_str(&page_text);
        spans.push(PageSpan { page, range: start..text.len() });
    }
    if text.is_empty() {
        if let Some(e) = last_error {
            return Err(ExtractError::Pdf(e));
        }
    }
    let title = pdf_title(&doc);
    if !text.is_empty() {
        text.push('\n');
    }
    Ok(Extracted { kind: SourceKind::Pdf, title, text, pages: Some(spans) })
}

/// One page's text, with line breaks where the text moves to a new line and a blank line
/// where it moves further (a paragraph or a heading), so the chunker sees structure.
///
/// `lopdf::Document::extract_text` runs a page's lines together; this walks the same
/// content operators but follows the text position (`Td`, `TD`, `Tm`, `T*`) as well.
/// Positions are compared without the full transformation matrix: enough for line breaks in
/// the common generators, not a layout engine (no columns, no reading-order repair).
fn pdf_page_text(doc: &lopdf::Document, page_id: lopdf::ObjectId, limit: usize) -> Result<String, lopdf::Error> {
    use lopdf::Object;
    let encodings: std::collections::BTreeMap<Vec<u8>, lopdf::Encoding> = doc
        .get_page_fonts(page_id)?
        .into_iter()
        // A font whose encoding cannot be read makes its text unreadable, not the page.
        .filter_map(|(name, font)| font.get_font_encoding_with_limit(doc, limit).ok().map(|e| (name, e)))
        .collect();
    let content = lopdf::content::Content::decode(&doc.get_page_content_with_limit(page_id, limit)?)?;
    let num = |o: Option<&Object>| o.and_then(|o| o.as_float().ok()).unwrap_or(0.0);

    let mut out = String::new();
    let mut encoding = None;
    let mut font_size: f32 = 10.0;
    let mut scale: f32 = 1.0;
    // Vertical position of the current line, and of the last line that showed text.
    let mut y: f32 = 0.0;
    let mut shown_y: Option<f32> = None;
    // A horizontal move since the last text: words placed one by one need a space.
    let mut moved_x = false;
    for op in &content.operations {
        let operands = &op.operands;
        match op.operator.as_str() {
            "Tf" => {
                encoding = operands.first().and_then(|o| o.as_name().ok()).and_then(|n| encodings.get(n));
                font_size = num(operands.get(1)).abs().max(1.0);
            }
            "BT" => {
                y = 0.0;
                scale = 1.0;
            }
            "Td" | "TD" => {
                let (dx, dy) = (num(operands.first()), num(operands.get(1)));
                y += dy * scale;
                moved_x |= dx != 0.0;
            }
            "Tm" => {
                scale = num(operands.get(3)).abs().max(f32::MIN_POSITIVE);
                y = num(operands.get(5));
                moved_x = true;
            }
            "T*" | "'" | "\"" => y -= font_size * scale * 1.2,
            _ => {}
        }
        let strings: &[Object] = match op.operator.as_str() {
            "Tj" | "'" => operands.get(..1).unwrap_or(&[]),
            "\"" => operands.get(2..3).unwrap_or(&[]),
            "TJ" => match operands.first() {
                Some(Object::Array(items)) => items,
                _ => &[],
            },
            _ => continue,
        };
        let Some(encoding) = encoding else { continue };
        let mut piece = String::new();
        for item in strings {
            match item {
                Object::String(bytes, _) => {
                    // An undecodable string is skipped; the rest of the page still reads.
                    let _ = encoding.write_to_string(bytes, &mut piece);
                }
                // A large negative adjustment in a TJ array is a word gap (thousandths of an em).
                Object::Integer(_) | Object::Real(_) if item.as_float().unwrap_or(0.0) < -200.0 => piece.push(' '),
                _ => {}
            }
        }
        if piece.trim().is_empty() {
            continue;
        }
        match shown_y {
            Some(prev) if (prev - y).abs() > font_size * scale * 1.8 => out.push_str("\n\n"),
            Some(prev) if (prev - y).abs() > font_size * scale * 0.3 => out.push('\n'),
            Some(_) if moved_x && !out.ends_with(char::is_whitespace) && !piece.starts_with(char::is_whitespace) => {
                out.push(' ')
            }
            _ => {}
        }
        out.push_str(&piece);
        shown_y = Some(y);
        moved_x = false;
    }
    Ok(out)
}

/// Page text as the chunker wants it: `\n` line ends, no trailing spaces, at most one blank
/// line in a row, and no line that would read as a Markdown heading or fence.
fn normalise_pdf_page(raw: &str) -> String {
    let text = normalise_text(raw);
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        if line.trim_start().starts_with('#') || line.trim_start().starts_with("```") {
            out.push('\\');
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_owned()
}

fn pdf_title(doc: &lopdf::Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let (_, info) = doc.dereference(info).ok()?;
    let title = info.as_dict().ok()?.get(b"Title").ok()?;
    let (_, title) = doc.dereference(title).ok()?;
    let title = collapse_ws(&lopdf::decode_text_string(title).ok()?);
    (!title.is_empty()).then_some(title)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn html(src: &str) -> Extracted {
        match extract(src.as_bytes(), Some("text/html"), None, &limits()) {
            Ok(e) => e,
            Err(e) => panic!("{e}: {src}"),
        }
    }

    /// A PDF with one line of text on each page, made with lopdf so the test needs no file.
    fn make_pdf(pages: &[&str], title: Option<&str>) -> Vec<u8> {
        use lopdf::content::{Content, Operation};
        use lopdf::{dictionary, Document, Object, Stream};
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font_id = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
        });
        let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
        let mut kids = Vec::new();
        for text in pages {
            let mut operations = vec![Operation::new("BT", vec![]), Operation::new("Tf", vec!["F1".into(), 12.into()])];
            for (n, line) in text.lines().enumerate() {
                let y = 700 - 14 * i64::try_from(n).unwrap_or(0);
                operations
                    .push(Operation::new("Tm", vec![1.into(), 0.into(), 0.into(), 1.into(), 72.into(), y.into()]));
                operations.push(Operation::new("Tj", vec![Object::string_literal(line)]));
            }
            operations.push(Operation::new("ET", vec![]));
            let content = Content { operations }.encode().expect("content encodes");
            let content_id = doc.add_object(Stream::new(dictionary! {}, content));
            let page_id =
                doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content_id });
            kids.push(page_id.into());
        }
        let count = i64::try_from(kids.len()).unwrap_or(0);
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources_id,
                "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
            }),
        );
        let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog_id);
        if let Some(title) = title {
            let info_id = doc.add_object(dictionary! { "Title" => Object::string_literal(title) });
            doc.trailer.set("Info", info_id);
        }
        doc.compress();
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("pdf saves");
        out
    }

    /// A one-page PDF whose content stream is `content`, uncompressed.
    fn pdf_with_raw_content(content: &[u8]) -> Vec<u8> {
        let pdf = make_pdf(&["PLACEHOLDER"], None);
        let doc = lopdf::Document::load_mem(&pdf).expect("own pdf loads");
        let mut doc = doc;
        let page_id = doc.get_pages().values().next().copied().expect("a page");
        let ids = doc.get_page_contents(page_id);
        for id in ids {
            if let Ok(lopdf::Object::Stream(stream)) = doc.get_object_mut(id) {
                stream.dict.remove(b"Filter");
                stream.set_content(content.to_vec());
            }
        }
        let mut out = Vec::new();
        doc.save_to(&mut out).expect("pdf saves");
        out
    }

    type KindCase<'a> = (Option<&'a str>, Option<&'a str>, &'a [u8], Result<SourceKind, ExtractError>);
    type TextCase<'a> = (&'a [u8], Option<&'a str>, Result<&'a str, ExtractError>);

    #[test]
    fn kinds_come_from_the_declared_type_then_the_name_then_the_bytes() {
        use SourceKind::*;
        let cases: &[KindCase] = &[
            (Some("text/markdown; charset=utf-8"), None, b"# x", Ok(Markdown)),
            (Some("Text/HTML"), None, b"hello", Ok(Html)),
            (Some("application/pdf"), None, b"not really", Ok(Pdf)),
            (Some("text/plain"), Some("README.md"), b"# x", Ok(Markdown)),
            (Some("text/plain"), Some("notes.txt"), b"# x", Ok(Text)),
            (Some("text/csv"), None, b"a,b", Ok(Text)),
            (Some("application/json"), None, b"{}", Ok(Text)),
            (None, None, b"%PDF-1.7\n...", Ok(Pdf)),
            (None, None, b"\x00\x01junk%PDF-1.4", Ok(Pdf)),
            (None, None, b"  <!DOCTYPE html><p>x", Ok(Html)),
            (None, None, b"\xEF\xBB\xBF<html lang=en>", Ok(Html)),
            (None, None, b"<!-- c --><html>", Ok(Html)),
            (Some("application/octet-stream"), Some("doc.MD"), b"# x", Ok(Markdown)),
            (None, Some("page.htm"), b"<p>x</p>", Ok(Html)),
            (None, Some("scan.pdf"), b"plain words", Ok(Text)),
            (None, None, b"<p>a fragment is text</p>", Ok(Text)),
            (None, None, b"just text", Ok(Text)),
            (None, None, b"bin\x00ary", Err(ExtractError::Binary)),
            (None, None, b"\xFF\xFEh\x00i\x00", Ok(Text)),
            (Some("image/png"), None, b"\x89PNG", Err(ExtractError::Unsupported("image/png".into()))),
        ];
        for (ct, name, bytes, want) in cases {
            assert_eq!(&detect_kind(*ct, *name, bytes), want, "{ct:?} {name:?} {:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn text_is_decoded_and_normalised_or_refused_with_the_reason() {
        let cases: Vec<TextCase> = vec![
            (b"a\r\nb\rc\n", None, Ok("a\nb\nc\n")),
            (b"\xEF\xBB\xBFbom", None, Ok("bom")),
            (b"nul\x00s dropped", Some("text/plain"), Ok("nuls dropped")),
            (b"\xFF\xFEh\x00\xE9\x00", None, Ok("h\u{e9}")),
            (b"caf\xE9", Some("text/plain; charset=ISO-8859-1"), Ok("caf\u{e9}")),
            (b"caf\xE9", Some("text/plain"), Err(ExtractError::InvalidEncoding { encoding: "UTF-8", offset: 3 })),
            (b"x", Some("text/plain; charset=klingon"), Err(ExtractError::UnknownCharset("klingon".into()))),
            (b"", Some("text/plain"), Err(ExtractError::NoText)),
            (b" \n\t ", None, Err(ExtractError::NoText)),
        ];
        for (bytes, ct, want) in &cases {
            let got = extract(bytes, *ct, None, &limits()).map(|e| e.text);
            assert_eq!(got.as_deref().map_err(Clone::clone), want.clone(), "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn limits_refuse_large_input_before_parsing_and_large_output() {
        let small = Limits { max_input_bytes: 10, ..Limits::default() };
        assert_eq!(extract(&[b'a'; 11], None, None, &small), Err(ExtractError::TooLarge { size: 11, max: 10 }));
        assert!(extract(&[b'a'; 10], None, None, &small).is_ok());
        let tight = Limits { max_output_bytes: 100, ..Limits::default() };
        let big = "<p>word</p>".repeat(100);
        assert_eq!(
            extract(big.as_bytes(), None, Some("a.html"), &tight),
            Err(ExtractError::OutputTooLarge { max: 100 })
        );
        assert_eq!(extract(&[b'a'; 101], None, None, &tight), Err(ExtractError::OutputTooLarge { max: 100 }));
    }

    #[test]
    fn markdown_keeps_its_text_and_takes_the_first_h1_as_title() {
        let cases = [
            ("# Guide\n\nbody", Some("Guide")),
            ("intro\n\n## Sub\n\n# Main #\n", Some("Main")),
            ("```\n# not a title\n```\n# Real", Some("Real")),
            ("#hashtag only", None),
            ("no headings", None),
        ];
        for (src, title) in cases {
            let e = extract(src.as_bytes(), Some("text/markdown"), None, &limits()).expect("markdown extracts");
            assert_eq!(e.title.as_deref(), title, "{src}");
            assert_eq!(e.text, src);
            assert_eq!(e.kind, SourceKind::Markdown);
        }
    }

    #[test]
    fn html_becomes_markdown_with_its_structure() {
        let page = r#"<!doctype html><html><head><meta charset="utf-8"><title> The  Guide </title>
<style>body { color: red }</style><script>if (a < b) { document.write("<h1>no</h1>") }</script></head>
<body><nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
<h1>Install</h1><p>Run the <code>tokaroo</code> binary &amp; enjoy.</p>
<h2 id="x">On <em>Linux</em></h2>
<ul><li>Debian<ul><li>12</li></ul></li><li><p>Fedora</p></li></ul>
<ol start="3"><li>third</li><li>fourth</li></ol>
<pre><code class="language-sh">cargo build
  --release</code></pre>
<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>
<p hidden>secret</p><div aria-hidden="true">also secret</div>
<p>#1 is not a heading</p>
<footer>Copyright</footer></body></html>"#;
        let e = html(page);
        assert_eq!(e.title.as_deref(), Some("The Guide"));
        let want = "# Install\n\nRun the `tokaroo` binary & enjoy.\n\n## On Linux\n\n- Debian\n  - 12\n- Fedora\n\n\
                    3. third\n4. fourth\n\n```sh\ncargo build\n  --release\n```\n\na | b\n1 | 2\n\n\\#1 is not a heading\n";
        assert_eq!(e.text, want);
    }

    #[test]
    fn html_details() {
        // (html, must contain, must not contain)
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("<h3></h3><p>empty heading leaves no marker</p>", &["empty heading"], &["###"]),
            ("<pre>a ``` b</pre>", &["````\na ``` b\n````"], &[]),
            ("<p>line<br>break</p>", &["line\nbreak"], &[]),
            ("<p>a</p><svg><text>drawn</text></svg><p>b</p>", &["a\n\nb"], &["drawn"]),
            ("<nav><nav>x</nav>still nav</nav><p>after</p>", &["after"], &["still nav", "x"]),
            ("<p>caf&eacute; &lt;tag&gt; &#x1F600;</p>", &["café <tag> 😀"], &[]),
            ("<p>unclosed <b>bold", &["unclosed bold"], &[]),
            ("<script>never closed <p>lost", &[], &["lost", "never"]),
            ("<img src=x alt=pic><p>text</p>", &["text"], &["pic"]),
            ("<embed src=x><p>void skip tags do not swallow</p>", &["void skip tags"], &[]),
            ("<h1>A<br>B</h1>", &["# A B"], &[]),
        ];
        for (src, has, hasnt) in cases {
            let text = extract(src.as_bytes(), Some("text/html"), None, &limits()).map(|e| e.text).unwrap_or_default();
            for h in *has {
                assert!(text.contains(h), "{src:?} → {text:?} lacks {h:?}");
            }
            for h in *hasnt {
                assert!(!text.contains(h), "{src:?} → {text:?} has {h:?}");
            }
        }
        assert_eq!(html("<h1>Only h1</h1><p>x</p>").title.as_deref(), Some("Only h1"));
        assert_eq!(
            extract(b"<html><script>x</script></html>", None, None, &limits()),
            Err(ExtractError::NoText),
            "a page with no visible text"
        );
    }

    #[test]
    fn html_charset_comes_from_the_header_or_a_meta_tag() {
        let latin = b"<html><head><meta charset=\"iso-8859-1\"></head><p>caf\xE9</p></html>";
        assert_eq!(extract(latin, None, None, &limits()).map(|e| e.text), Ok("caf\u{e9}\n".to_owned()));
        let declared = extract(b"<p>caf\xE9</p>", Some("text/html; charset=windows-1252"), None, &limits());
        assert_eq!(declared.map(|e| e.text), Ok("caf\u{e9}\n".to_owned()));
        let bad = extract(b"<p>caf\xE9</p>", Some("text/html"), None, &limits());
        assert!(matches!(bad, Err(ExtractError::InvalidEncoding { .. })), "{bad:?}");
    }

    #[test]
    fn deeply_nested_html_costs_no_stack_and_stays_bounded() {
        let depth = 200_000;
        let divs = format!("{}deep{}", "<div>".repeat(depth), "</div>".repeat(depth));
        assert_eq!(html(&divs).text, "deep\n");
        let lists = format!("{}leaf{}", "<ul><li>".repeat(depth / 4), "</li></ul>".repeat(depth / 4));
        let e = html(&lists);
        assert!(e.text.contains("leaf"));
        assert!(e.text.len() < lists.len(), "indentation is capped: {} bytes", e.text.len());
        let unclosed = "<b><i><span>".repeat(depth / 3) + "x";
        assert_eq!(html(&unclosed).text, "x\n");
    }

    #[test]
    fn pdf_pages_are_extracted_and_located() {
        let pdf = make_pdf(&["Hello page one", "Second page text\nwith two lines"], Some("Report 2026"));
        let e = extract(&pdf, None, Some("report.pdf"), &limits()).expect("pdf extracts");
        assert_eq!(e.kind, SourceKind::Pdf);
        assert_eq!(e.title.as_deref(), Some("Report 2026"));
        let pages = e.pages.clone().expect("pages known");
        assert_eq!(pages.iter().map(|p| p.page).collect::<Vec<_>>(), [1, 2]);
        assert!(e.text[pages[0].range.clone()].contains("Hello page one"), "{:?}", e.text);
        // Lines placed one under the other stay separate lines.
        assert_eq!(&e.text[pages[1].range.clone()], "Second page text\nwith two lines");
        assert!(pages[0].range.end <= pages[1].range.start);
    }

    #[test]
    fn bad_pdfs_are_errors_not_panics() {
        let good = make_pdf(&["text"], None);
        let few_pages = Limits { max_pdf_pages: 1, ..Limits::default() };
        assert_eq!(
            extract(&make_pdf(&["a", "b"], None), Some("application/pdf"), None, &few_pages),
            Err(ExtractError::TooManyPages { pages: 2, max: 1 })
        );
        assert_eq!(extract(&make_pdf(&[""], None), None, None, &limits()), Err(ExtractError::NoText));
        let mut flipped = good.clone();
        for b in flipped.iter_mut().skip(200).step_by(7) {
            *b ^= 0x5A;
        }
        // Objects intact but the cross-reference table gone: lenient loading rebuilds it.
        let xref_at = good.windows(4).rposition(|w| w == b"xref").unwrap_or(good.len());
        let no_xref = good[..xref_at].to_vec();
        assert_eq!(extract(&no_xref, None, None, &limits()).map(|e| e.text), Ok("text\n".to_owned()));
        let junk = extract(
            &pdf_with_raw_content(b"BT /F1 12 Tf (kept) Tj ET ((( [[[ << >> 1 2 Tm Tj TJ T* ' \" "),
            None,
            None,
            &limits(),
        );
        assert!(
            matches!(&junk, Err(ExtractError::Pdf(_))) || junk.as_ref().is_ok_and(|e| e.text.contains("kept")),
            "{junk:?}"
        );
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("header only", b"%PDF-1.7\n".to_vec()),
            ("garbage", b"%PDF-1.4\n\x00\xFF garbage trailer << /Root 99 0 R >>".to_vec()),
            ("truncated", good[..good.len() / 2].to_vec()),
            ("bit-flipped", flipped),
            ("no xref", no_xref),
            ("junk content", pdf_with_raw_content(b"BT /F1 12 Tf (unclosed Tj ET [[[ << >> 1 2 Tm Tj TJ T* ' \" ")),
            ("huge numbers", pdf_with_raw_content(b"BT /F1 1e38 Tf 0 -1e38 Td (x) Tj 1 0 0 -9e37 0 9e37 Tm (y) Tj ET")),
            ("nested arrays", format!("%PDF-1.4\n1 0 obj\n{}\nendobj\n", "[".repeat(100_000)).into_bytes()),
        ];
        for (name, bytes) in cases {
            match extract(&bytes, Some("application/pdf"), None, &limits()) {
                Err(ExtractError::Pdf(_) | ExtractError::NoText) => {}
                // A damaged file may still yield some text; it must not panic.
                Ok(e) => assert!(!e.text.trim().is_empty(), "{name}"),
                Err(other) => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
}
