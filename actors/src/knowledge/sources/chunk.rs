//! Structure-aware chunking of Markdown-like text (what [`super::extract`] produces) into
//! pieces small enough to embed and cite.
//!
//! The text is first read as blocks: ATX and setext headings, fenced code blocks, lists and
//! paragraphs. Headings open sections, whose heading path ("Install > Linux") every chunk
//! carries for citations. Blocks are packed in order into chunks of at most `max_tokens`
//! (counted with the real tokenizer, never estimated), aiming for evenly sized chunks of at
//! least `min_tokens`; a block too large for one chunk is split at lines, then sentences, then
//! words, then between tokens. Each chunk after the first of its section starts with up to
//! `overlap_tokens` of the previous chunk's trailing words, never reaching back over a heading.
//!
//! Every chunk's text is exactly `text[chunk.range]`, so a citation can highlight the source,
//! and output depends only on the input and options, so re-ingesting a document replaces its
//! chunks predictably.

use std::ops::{Range, RangeInclusive};

use tiktoken_rs::CoreBPE;

use super::extract::PageSpan;

/// How large chunks are, in tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Hard limit: no chunk's text counts more tokens than this.
    pub max_tokens: usize,
    /// Chunks smaller than this are avoided where the structure allows: a small section is
    /// joined with the subsections that follow it, and a long section is cut into even parts
    /// rather than full parts and a stub.
    pub min_tokens: usize,
    /// Trailing text of the previous chunk (same section only) repeated at a chunk's start, so
    /// a sentence cut at a boundary is still whole in one of the two.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        // 200 o200k tokens are about 250 of the built-in embedder's word pieces, within the
        // 256 it reads: a chunk's vector sees all of it.
        ChunkOptions { max_tokens: 200, min_tokens: 50, overlap_tokens: 30 }
    }
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// 0-based position in the document's chunk list.
    pub ordinal: u32,
    /// The chunk's text: exactly `source[range]`.
    pub text: String,
    /// Tokens in `text`, counted with [`count_tokens`]; at most `max_tokens`.
    pub tokens: usize,
    /// Heading path of the section the chunk starts in, outermost first; empty before the
    /// first heading.
    pub section: Vec<String>,
    /// Byte range of `text` in the chunked text.
    pub range: Range<usize>,
    /// First and last PDF page the chunk's text is on, when pages are known.
    pub pages: Option<RangeInclusive<u32>>,
}

impl Chunk {
    /// The section path as shown in a citation: `Install > Linux`.
    pub fn section_label(&self) -> String {
        self.section.join(" > ")
    }
}

/// Options that cannot produce chunks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("invalid chunk options: {0}")]
    InvalidOptions(&'static str),
}

/// The tokenizer: OpenAI's `o200k_base`, the encoding the gateway already uses to count prompt
/// tokens (`actors/src/chat/tokenizer.rs`), so one table is loaded and counts agree.
fn bpe() -> &'static CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

/// The number of tokens in `text`.
pub fn count_tokens(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    bpe().encode_ordinary(text).len()
}

/// No token is longer than this many bytes (o200k's longest are runs of 64 dashes or
/// spaces, and a little more), so text longer than `max_tokens * MAX_TOKEN_BYTES` cannot fit and
/// is split without being tokenized whole: tokenizing one huge run of letters is slow.
const MAX_TOKEN_BYTES: usize = 128;

/// Splits `text` into chunks. `pages` (from [`super::extract::Extracted::pages`]) lets each
/// chunk cite its PDF pages.
pub fn chunk(text: &str, pages: Option<&[PageSpan]>, opts: &ChunkOptions) -> Result<Vec<Chunk>, ChunkError> {
    // One character is at most 4 tokens (its UTF-8 bytes), so 16 always makes progress.
    if opts.max_tokens < 16 {
        return Err(ChunkError::InvalidOptions("max_tokens must be at least 16"));
    }
    if opts.min_tokens > opts.max_tokens {
        return Err(ChunkError::InvalidOptions("min_tokens must not exceed max_tokens"));
    }
    if opts.overlap_tokens * 2 > opts.max_tokens {
        return Err(ChunkError::InvalidOptions("overlap_tokens must be at most half of max_tokens"));
    }
    let (blocks, sections) = parse_blocks(text);
    let mut pieces = Vec::with_capacity(blocks.len());
    for block in &blocks {
        match measure(text, block.range.clone(), opts.max_tokens) {
            Some(tokens) => pieces.push(Piece { range: block.range.clone(), tokens, section: block.section }),
            None => split_oversized(text, block.range.clone(), block.section, 0, opts.max_tokens, &mut pieces),
        }
    }
    let mut chunks = Packer { text, pieces: &pieces, sections: &sections, opts }.pack();
    if let Some(pages) = pages {
        for c in &mut chunks {
            c.pages = pages_of(pages, &c.range);
        }
    }
    Ok(chunks)
}

// ---------------------------------------------------------------------------------------------
// Blocks and sections

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Heading,
    Code,
    List,
    Paragraph,
}

#[derive(Debug)]
struct Block {
    #[cfg_attr(not(test), allow(dead_code))]
    kind: BlockKind,
    range: Range<usize>,
    section: usize,
}

#[derive(Debug)]
struct Section {
    path: Vec<String>,
}

impl Section {
    /// Whether `self` is nested in `ancestor` (the empty path, before any heading, is the
    /// ancestor of every section).
    fn is_within(&self, ancestor: &Section) -> bool {
        self.path.len() > ancestor.path.len() && self.path.starts_with(&ancestor.path)
    }
}

/// Byte ranges of the text's lines, without their `\n`.
fn lines(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(text.len() / 40 + 1);
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        if b == b'\n' {
            out.push(start..i);
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push(start..text.len());
    }
    out
}

/// Strips up to 3 leading spaces, as Markdown allows before block markers.
fn unindent(line: &str) -> Option<&str> {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    (spaces <= 3).then(|| &line[spaces..])
}

/// `## Title ##` → `(2, "Title")`.
fn atx_heading(line: &str) -> Option<(usize, &str)> {
    let line = unindent(line)?;
    let level = line.len() - line.trim_start_matches('#').len();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let title = rest.trim();
    // A closing run of `#` is decoration, unless it is the whole title.
    let stripped = title.trim_end_matches('#');
    let title = if stripped.is_empty() || stripped.ends_with([' ', '\t']) { stripped.trim_end() } else { title };
    Some((level, title))
}

/// An opening code fence: its character and length.
fn fence_open(line: &str) -> Option<(u8, usize)> {
    let line = unindent(line)?;
    let c = *line.as_bytes().first()?;
    if c != b'`' && c != b'~' {
        return None;
    }
    let n = line.len() - line.trim_start_matches(char::from(c)).len();
    // A backtick fence's info string may not contain a backtick (that is inline code).
    (n >= 3 && !(c == b'`' && line[n..].contains('`'))).then_some((c, n))
}

fn fence_closes(line: &str, (c, n): (u8, usize)) -> bool {
    let Some(line) = unindent(line) else { return false };
    let run = line.len() - line.trim_start_matches(char::from(c)).len();
    run >= n && line[run..].trim().is_empty()
}

/// Whether the line starts a list item: `Some(false)` for a bullet, `Some(true)` for a number.
fn list_marker(line: &str) -> Option<bool> {
    let line = unindent(line)?;
    let b = line.as_bytes();
    if b.len() >= 2 && matches!(b[0], b'-' | b'*' | b'+') && matches!(b[1], b' ' | b'\t') {
        return Some(false);
    }
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    ((1..=9).contains(&digits)
        && b.len() > digits + 1
        && matches!(b[digits], b'.' | b')')
        && matches!(b[digits + 1], b' ' | b'\t'))
    .then_some(true)
}

fn list_item(line: &str) -> bool {
    list_marker(line).is_some()
}

fn setext_level(line: &str) -> Option<usize> {
    let t = unindent(line)?.trim_end();
    if t.len() >= 3 && t.bytes().all(|b| b == b'=') {
        Some(1)
    } else if t.len() >= 3 && t.bytes().all(|b| b == b'-') {
        Some(2)
    } else {
        None
    }
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// Reads the text as Markdown blocks, each tagged with its section; section 0 is the text
/// before the first heading.
///
/// A heading in a section path is at most this many characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// `title` cut to [`MAX_TITLE_CHARS`] characters (an ellipsis marks a cut).
pub fn short_title(title: &str) -> String {
    match title.char_indices().nth(MAX_TITLE_CHARS) {
        Some((cut, _)) => format!("{}…", &title[..cut]),
        None => title.to_owned(),
    }
}

fn parse_blocks(text: &str) -> (Vec<Block>, Vec<Section>) {
    let lines = lines(text);
    let line = |i: usize| &text[lines[i].clone()];
    let mut blocks = Vec::new();
    let mut sections = vec![Section { path: Vec::new() }];
    // (level, title) of the open headings.
    let mut open: Vec<(usize, String)> = Vec::new();
    let mut heading = |level: usize, title: &str, sections: &mut Vec<Section>| {
        while open.last().is_some_and(|(l, _)| *l >= level) {
            open.pop();
        }
        // Every chunk of the section carries its path: a heading is cut to a title's length,
        // so a huge one-line "heading" is not copied into every chunk.
        open.push((level, short_title(title)));
        sections.push(Section { path: open.iter().map(|(_, t)| t.clone()).collect() });
        sections.len() - 1
    };
    let mut i = 0;
    while i < lines.len() {
        let l = line(i);
        if is_blank(l) {
            i += 1;
            continue;
        }
        let start = lines[i].start;
        if let Some((level, title)) = atx_heading(l) {
            let section = heading(level, title, &mut sections);
            blocks.push(Block { kind: BlockKind::Heading, range: trimmed(text, start..lines[i].end), section });
            i += 1;
            continue;
        }
        let section = sections.len() - 1;
        if let Some(fence) = fence_open(l) {
            let mut j = i + 1;
            while j < lines.len() && !fence_closes(line(j), fence) {
                j += 1;
            }
            // An unclosed fence runs to the end, as in CommonMark.
            let end = lines[j.min(lines.len() - 1)].end;
            blocks.push(Block { kind: BlockKind::Code, range: trimmed(text, start..end), section });
            i = j + 1;
            continue;
        }
        if let Some(ordered) = list_marker(l) {
            let mut j = i + 1;
            loop {
                while j < lines.len()
                    && !is_blank(line(j))
                    && atx_heading(line(j)).is_none()
                    && fence_open(line(j)).is_none()
                {
                    j += 1;
                }
                // A blank line ends the list unless an item of the same kind or an indented
                // continuation follows.
                let mut k = j;
                while k < lines.len() && is_blank(line(k)) {
                    k += 1;
                }
                if k > j
                    && k < lines.len()
                    && (list_marker(line(k)) == Some(ordered) || line(k).starts_with("  ") || line(k).starts_with('\t'))
                {
                    j = k;
                } else {
                    break;
                }
            }
            blocks.push(Block { kind: BlockKind::List, range: trimmed(text, start..lines[j - 1].end), section });
            i = j;
            continue;
        }
        // A paragraph runs to a blank line or to a line that starts another block.
        let mut j = i + 1;
        while j < lines.len() {
            let next = line(j);
            if is_blank(next) || atx_heading(next).is_some() || fence_open(next).is_some() || list_item(next) {
                break;
            }
            if let Some(level) = setext_level(next) {
                if j == i + 1 {
                    // `Title` underlined by `===`/`---`: a heading.
                    let section = heading(level, l.trim(), &mut sections);
                    blocks.push(Block { kind: BlockKind::Heading, range: trimmed(text, start..lines[j].end), section });
                    j += 1;
                    i = j;
                    break;
                }
                // An underline under a multi-line paragraph is left in the paragraph.
            }
            j += 1;
        }
        if i == j {
            continue;
        }
        blocks.push(Block { kind: BlockKind::Paragraph, range: trimmed(text, start..lines[j - 1].end), section });
        i = j;
    }
    (blocks, sections)
}

/// The range without leading and trailing whitespace.
fn trimmed(text: &str, range: Range<usize>) -> Range<usize> {
    let s = &text[range.clone()];
    let start = range.start + (s.len() - s.trim_start().len());
    let end = range.start + s.trim_end().len();
    start..end.max(start)
}

// ---------------------------------------------------------------------------------------------
// Pieces: blocks, or parts of blocks too large for a chunk

#[derive(Debug, Clone)]
struct Piece {
    range: Range<usize>,
    tokens: usize,
    section: usize,
}

/// The range's token count if it fits in `max`; `None` (without tokenizing) if it is so long
/// it cannot.
fn measure(text: &str, range: Range<usize>, max: usize) -> Option<usize> {
    if range.len() > max.saturating_mul(MAX_TOKEN_BYTES) {
        return None;
    }
    let tokens = count_tokens(&text[range]);
    (tokens <= max).then_some(tokens)
}

/// Splits a range that does not fit in one chunk at the coarsest boundaries that work:
/// lines (level 0), then sentences, then words, then between tokens.
fn split_oversized(text: &str, range: Range<usize>, section: usize, level: u8, max: usize, out: &mut Vec<Piece>) {
    let units = match level {
        0 => split_at(text, range, |s, i| s.as_bytes()[i] == b'\n'),
        1 => split_sentences(text, range),
        2 => split_at(text, range, |s, i| s.as_bytes()[i].is_ascii_whitespace()),
        _ => return split_tokens(text, range, section, max, out),
    };
    for unit in units {
        match measure(text, unit.clone(), max) {
            Some(tokens) => out.push(Piece { range: unit, tokens, section }),
            None => split_oversized(text, unit, section, level + 1, max, out),
        }
    }
}

/// Trimmed, non-empty parts of `range` between bytes where `is_sep` holds (an ASCII byte,
/// so every cut is on a character boundary).
fn split_at(text: &str, range: Range<usize>, is_sep: impl Fn(&str, usize) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = range.start;
    for i in range.clone() {
        if is_sep(text, i) {
            push_trimmed(text, start..i, &mut out);
            start = i + 1;
        }
    }
    push_trimmed(text, start..range.end, &mut out);
    out
}

fn push_trimmed(text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let r = trimmed(text, range);
    if !r.is_empty() {
        out.push(r);
    }
}

/// Sentences: ends after `.`, `!`, `?`, `;` or `:` followed by whitespace, and after CJK
/// full stops, which take no space after them.
fn split_sentences(text: &str, range: Range<usize>) -> Vec<Range<usize>> {
    let s = &text[range.clone()];
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev: Option<char> = None;
    for (i, c) in s.char_indices() {
        let latin_end = c.is_whitespace() && matches!(prev, Some('.' | '!' | '?' | ';' | ':'));
        if latin_end || matches!(prev, Some('。' | '！' | '？' | '；')) {
            push_trimmed(text, range.start + start..range.start + i, &mut out);
            start = i;
        }
        prev = Some(c);
    }
    push_trimmed(text, range.start + start..range.end, &mut out);
    out
}

/// Cuts text without usable boundaries (one huge word, CJK without punctuation) after
/// `max` tokens each time, at a character boundary.
fn split_tokens(text: &str, range: Range<usize>, section: usize, max: usize, out: &mut Vec<Piece>) {
    let mut start = range.start;
    while start < range.end {
        // Tokenize a window just large enough for `max` tokens, never the whole run: start
        // from a typical 8 bytes a token and grow while the window holds too few.
        let mut span = max * 8;
        let (window_end, tokens) = loop {
            let window_end = floor_char_boundary(text, start.saturating_add(span).min(range.end));
            let tokens = bpe().encode_ordinary(&text[start..window_end]);
            if tokens.len() > max || window_end == range.end || span >= max * MAX_TOKEN_BYTES {
                break (window_end, tokens);
            }
            span *= 2;
        };
        let window = &text[start..window_end];
        let mut end = if tokens.len() <= max {
            window_end
        } else {
            let bytes = bpe().decode_bytes(&tokens[..max]).map_or(window.len() / 2, |b| b.len());
            floor_char_boundary(text, start + bytes)
        };
        // A prefix can tokenize differently from the same bytes inside a longer text; shrink
        // until it really fits. Each step drops about a tenth, so this ends quickly.
        let mut count = count_tokens(&text[start..end]);
        while count > max {
            end = floor_char_boundary(text, start + (end - start) * 9 / 10);
            count = count_tokens(&text[start..end]);
        }
        if end <= start {
            // One character is at most 4 tokens and `max` is at least 16.
            end = next_char_boundary(text, start);
            count = count_tokens(&text[start..end]);
        }
        out.push(Piece { range: start..end, tokens: count, section });
        start = end;
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn next_char_boundary(text: &str, mut i: usize) -> usize {
    i += 1;
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------------------------
// Packing pieces into chunks

struct Packer<'a> {
    text: &'a str,
    pieces: &'a [Piece],
    sections: &'a [Section],
    opts: &'a ChunkOptions,
}

impl Packer<'_> {
    /// Estimated tokens of the text between two pieces: a line break usually costs one, a
    /// space merges into the next word. Estimates are checked by counting the whole chunk.
    fn join_cost(&self, a: usize, b: usize) -> usize {
        usize::from(self.text[self.pieces[a].range.end..self.pieces[b].range.start].contains('\n'))
    }

    fn pack(&self) -> Vec<Chunk> {
        let max = self.opts.max_tokens;
        let pieces = self.pieces;
        // Tokens of each section's pieces from here to the section's end, for even sizing.
        let mut rest_of_section = vec![0usize; pieces.len()];
        for i in (0..pieces.len()).rev() {
            let after = if i + 1 < pieces.len() && pieces[i + 1].section == pieces[i].section {
                rest_of_section[i + 1] + self.join_cost(i, i + 1)
            } else {
                0
            };
            rest_of_section[i] = pieces[i].tokens + after;
        }

        let mut chunks: Vec<Chunk> = Vec::new();
        // (text start of the previous chunk, index of its last piece)
        let mut prev: Option<(usize, usize)> = None;
        let mut i = 0;
        while i < pieces.len() {
            let first = &pieces[i];
            let mut overlap = match prev {
                Some((prev_start, last)) if pieces[last].section == first.section && self.opts.overlap_tokens > 0 => {
                    let budget = self.opts.overlap_tokens.min(max.saturating_sub(first.tokens + 1));
                    self.overlap_start(prev_start, pieces[last].range.end, budget)
                }
                _ => None,
            };
            let overlap_est = overlap.map_or(0, |(_, t)| t + 1);

            // Aim at an even split of what is left of the section, so its last chunk is no stub.
            let usable = max - self.opts.overlap_tokens;
            let left = rest_of_section[i];
            let target =
                if left + overlap_est <= max { max } else { left.div_ceil(left.div_ceil(usable)) + overlap_est };

            let mut est = overlap_est + first.tokens;
            let mut j = i + 1;
            while j < pieces.len() {
                let p = &pieces[j];
                let add = self.join_cost(j - 1, j) + p.tokens;
                if est + add > max || est >= target {
                    break;
                }
                if p.section != pieces[j - 1].section {
                    // A chunk may run on into subsections only while it is still small, and only
                    // if the subsection's heading arrives with some of its text.
                    let nested = self.sections[p.section].is_within(&self.sections[first.section]);
                    let with_next = match pieces.get(j + 1) {
                        Some(n) if n.section == p.section => add + self.join_cost(j, j + 1) + n.tokens,
                        _ => add,
                    };
                    if !(nested && est < self.opts.min_tokens && est + with_next <= max) {
                        break;
                    }
                }
                est += add;
                j += 1;
            }

            // The estimate guides; the count decides. Drop pieces (then the overlap) until the
            // exact text fits. A lone piece always fits: it was counted on its own.
            let (start, tokens) = loop {
                let start = overlap.map_or(first.range.start, |(s, _)| s);
                let tokens = count_tokens(&self.text[start..pieces[j - 1].range.end]);
                if tokens <= max {
                    break (start, tokens);
                }
                if j - 1 > i {
                    j -= 1;
                } else if overlap.is_some() {
                    overlap = None;
                } else {
                    break (start, tokens);
                }
            };
            let end = pieces[j - 1].range.end;
            chunks.push(Chunk {
                ordinal: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
                text: self.text[start..end].to_owned(),
                tokens,
                section: self.sections[first.section].path.clone(),
                range: start..end,
                pages: None,
            });
            prev = Some((start, j - 1));
            i = j;
        }
        chunks
    }

    /// Where the overlap starts: the earliest word start in `lo..hi` from which the text to
    /// `hi` fits in `budget` tokens (with its token count). Searches only a window of bytes
    /// that could hold `budget` tokens, by bisection over word starts (or characters, for
    /// text without spaces).
    fn overlap_start(&self, lo: usize, hi: usize, budget: usize) -> Option<(usize, usize)> {
        if budget == 0 || lo >= hi {
            return None;
        }
        let window_lo = floor_char_boundary(self.text, hi.saturating_sub(budget * 16).max(lo));
        let window = &self.text[window_lo..hi];
        let bytes = window.as_bytes();
        let mut starts: Vec<usize> = (1..bytes.len())
            .filter(|&k| bytes[k - 1].is_ascii_whitespace() && !bytes[k].is_ascii_whitespace())
            .map(|k| window_lo + k)
            .collect();
        if window_lo == lo || bytes.first().is_some_and(|b| b.is_ascii_whitespace()) {
            starts.insert(0, window_lo);
        }
        if starts.is_empty() {
            starts = window.char_indices().skip(1).map(|(k, _)| window_lo + k).collect();
        }
        // Token counts shrink as the start moves right; find the leftmost start that fits.
        let fits = |s: usize| {
            let t = count_tokens(self.text[s..hi].trim_start());
            (t <= budget).then_some(t)
        };
        let (mut a, mut b) = (0, starts.len());
        while a < b {
            let m = (a + b) / 2;
            if fits(starts[m]).is_some() {
                b = m;
            } else {
                a = m + 1;
            }
        }
        let s = *starts.get(a)?;
        let t = fits(s)?;
        let s = hi - self.text[s..hi].trim_start().len();
        (t > 0).then_some((s, t))
    }
}

/// The first and last page whose text the range touches.
fn pages_of(pages: &[PageSpan], range: &Range<usize>) -> Option<RangeInclusive<u32>> {
    let first = pages.partition_point(|p| p.range.end <= range.start);
    let last = pages.partition_point(|p| p.range.start < range.end);
    if first >= last {
        return None;
    }
    Some(pages[first].page..=pages[last - 1].page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max: usize, min: usize, overlap: usize) -> ChunkOptions {
        ChunkOptions { max_tokens: max, min_tokens: min, overlap_tokens: overlap }
    }

    fn run(text: &str, o: &ChunkOptions) -> Vec<Chunk> {
        let chunks = chunk(text, None, o).expect("valid options");
        check_invariants(text, &chunks, o);
        chunks
    }

    /// What must hold for every input: exact slices, true token counts within the limit,
    /// ordinals in order, and every non-space byte of the text in some chunk.
    fn check_invariants(text: &str, chunks: &[Chunk], o: &ChunkOptions) {
        let mut covered = 0;
        for (n, c) in chunks.iter().enumerate() {
            assert_eq!(c.ordinal as usize, n);
            assert_eq!(c.text, text[c.range.clone()], "chunk {n} is a slice of the text");
            assert_eq!(c.tokens, count_tokens(&c.text), "chunk {n} token count");
            assert!(c.tokens <= o.max_tokens, "chunk {n}: {} > {} tokens", c.tokens, o.max_tokens);
            assert!(!c.text.trim().is_empty() && c.text.trim() == c.text, "chunk {n} is trimmed, non-empty");
            assert!(c.range.start <= covered || text[covered..c.range.start].trim().is_empty(), "gap before chunk {n}");
            assert!(c.range.end > covered, "chunk {n} adds text");
            covered = c.range.end;
        }
        assert!(text[covered..].trim().is_empty(), "text after the last chunk");
    }

    #[test]
    fn options_that_cannot_work_are_refused() {
        let cases = [
            (opts(8, 0, 0), "max_tokens must be at least 16"),
            (opts(100, 101, 0), "min_tokens must not exceed max_tokens"),
            (opts(100, 10, 51), "overlap_tokens must be at most half of max_tokens"),
        ];
        for (o, msg) in cases {
            assert_eq!(chunk("text", None, &o), Err(ChunkError::InvalidOptions(msg)));
        }
        assert!(chunk("text", None, &opts(16, 16, 8)).is_ok());
    }

    #[test]
    fn empty_and_blank_text_has_no_chunks() {
        for text in ["", "   ", "\n\n\t\n"] {
            assert_eq!(run(text, &ChunkOptions::default()), []);
        }
    }

    #[test]
    fn blocks_are_read_as_markdown() {
        use BlockKind::*;
        let text = "intro line\nsecond line\n\n# Title #\n\n```rust\nfn x() {}\n\n# not a heading\n```\n\n\
                    - a\n- b\n\n  continued\n\n1. one\n2) two\n\nSetext\n======\n\npara\n#7 not heading\n\n~~~\nunclosed";
        let (blocks, sections) = parse_blocks(text);
        let got: Vec<(BlockKind, &str, usize)> =
            blocks.iter().map(|b| (b.kind, &text[b.range.clone()], b.section)).collect();
        let want = [
            (Paragraph, "intro line\nsecond line", 0),
            (Heading, "# Title #", 1),
            (Code, "```rust\nfn x() {}\n\n# not a heading\n```", 1),
            (List, "- a\n- b\n\n  continued", 1),
            (List, "1. one\n2) two", 1),
            (Heading, "Setext\n======", 2),
            (Paragraph, "para\n#7 not heading", 2),
            (Code, "~~~\nunclosed", 2),
        ];
        assert_eq!(got, want);
        assert_eq!(sections.iter().map(|s| s.path.join(">")).collect::<Vec<_>>(), ["", "Title", "Setext"]);
    }

    #[test]
    fn chunks_carry_their_heading_path() {
        let text = "# Install\n\nGet it.\n\n## Linux\n\nUse apt.\n\n### Debian\n\napt install.\n\n## macOS\n\nUse brew.\n\n# Use\n\nRun it.";
        // min 0: no merging of small sections, so each section is its own chunk.
        let chunks = run(text, &opts(100, 0, 10));
        let got: Vec<(String, &str)> = chunks.iter().map(|c| (c.section_label(), c.text.as_str())).collect();
        let want = [
            ("Install", "# Install\n\nGet it."),
            ("Install > Linux", "## Linux\n\nUse apt."),
            ("Install > Linux > Debian", "### Debian\n\napt install."),
            ("Install > macOS", "## macOS\n\nUse brew."),
            ("Use", "# Use\n\nRun it."),
        ];
        assert_eq!(got, want.map(|(s, t)| (s.to_owned(), t)));
    }

    #[test]
    fn small_sections_join_their_subsections_but_not_their_siblings() {
        let labels = |text: &str, o: &ChunkOptions| -> Vec<(String, String)> {
            run(text, o).into_iter().map(|c| (c.section_label(), c.text)).collect()
        };
        let owned = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
        };
        // Guide's intro is small, so it takes its subsections along: all lie within "Guide",
        // which the chunk cites.
        let guide = "# Guide\n\nShort intro.\n\n## Install\n\nShort.\n\n## Use\n\nAlso short.";
        assert_eq!(labels(guide, &opts(200, 50, 10)), owned(&[("Guide", guide)]));
        // A chunk that has reached min_tokens stops at the next heading.
        assert_eq!(
            labels(guide, &opts(200, 5, 10)),
            owned(&[
                ("Guide", "# Guide\n\nShort intro."),
                ("Guide > Install", "## Install\n\nShort."),
                ("Guide > Use", "## Use\n\nAlso short.")
            ])
        );
        // Siblings never share a chunk, however small.
        let siblings = "## A\n\nx\n\n## B\n\ny";
        assert_eq!(labels(siblings, &opts(200, 50, 10)), owned(&[("A", "## A\n\nx"), ("B", "## B\n\ny")]));
        // A subsection joins only if its heading arrives with text that fits.
        let big = format!("# G\n\nIntro.\n\n## Big\n\n{}", "word ".repeat(196).trim());
        let got = labels(&big, &opts(200, 50, 10));
        assert_eq!(got[0], ("G".to_owned(), "# G\n\nIntro.".to_owned()), "{got:?}");
    }

    #[test]
    fn code_blocks_stay_whole_when_they_fit_and_split_at_lines_when_not() {
        let code: String = (0..12).map(|i| format!("let v{i} = compute({i});\n")).collect();
        let text = format!("Before.\n\n```rust\n{code}```\n\nAfter.");
        let chunks = run(&text, &opts(200, 0, 0));
        assert!(chunks.iter().any(|c| c.text.contains(&format!("```rust\n{code}```"))), "{chunks:#?}");

        let long: String = (0..200).map(|i| format!("let value_{i} = compute({i});\n")).collect();
        let text = format!("```rust\n{long}```");
        let chunks = run(&text, &opts(100, 0, 0));
        assert!(chunks.len() > 10);
        for c in &chunks {
            // Cut at line ends only: each chunk is whole lines of the block.
            let at_line_start = c.range.start == 0 || text.as_bytes()[c.range.start - 1] == b'\n';
            let at_line_end = c.range.end == text.len() || text.as_bytes()[c.range.end] == b'\n';
            assert!(at_line_start && at_line_end, "{:?}", c.text);
        }
    }

    #[test]
    fn nothing_exceeds_the_limit_whatever_the_text() {
        let cjk = "日本語のテキストは空白なしで続きます".repeat(400);
        let cjk_sentences = "これは文です。".repeat(500);
        let giant_word = "x".repeat(100_000);
        let dashes = "-".repeat(50_000);
        let emoji = "🦀".repeat(5_000);
        let mixed = format!("# T\n\n{giant_word} tail words here\n\n{cjk}\n\n```\n{dashes}\n```");
        let one_line_prose = "word ".repeat(20_000);
        let long_list: String = (0..2000).map(|i| format!("- item {i} with some words\n")).collect();
        let table: String = (0..500).map(|i| format!("| {i} | cell | cell |\n")).collect();
        let cases: [(&str, &str); 9] = [
            ("cjk", &cjk),
            ("cjk sentences", &cjk_sentences),
            ("giant word", &giant_word),
            ("dashes", &dashes),
            ("emoji", &emoji),
            ("mixed", &mixed),
            ("one-line prose", &one_line_prose),
            ("long list", &long_list),
            ("table", &table),
        ];
        for (name, text) in cases {
            for o in [opts(16, 0, 0), opts(64, 16, 16), ChunkOptions::default()] {
                let chunks = run(text, &o);
                assert!(!chunks.is_empty(), "{name}");
                // No needless fragmentation: on average chunks are well filled.
                if chunks.len() > 2 {
                    let avg = chunks.iter().map(|c| c.tokens).sum::<usize>() / chunks.len();
                    assert!(avg * 2 >= o.max_tokens, "{name} {o:?}: average {avg} tokens");
                }
            }
        }
    }

    #[test]
    fn long_sections_split_evenly_with_overlap_inside_the_section_only() {
        let para = "The gateway routes each request to a provider and records its cost. ";
        let body: String = (0..30).map(|i| format!("{}Paragraph {i}.\n\n", para.repeat(3))).collect();
        let text = format!("# One\n\n{body}# Two\n\n{body}");
        let o = opts(200, 80, 40);
        let chunks = run(&text, &o);
        let two_at = text.find("# Two").expect("heading");
        for pair in chunks.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.section == b.section {
                assert!(b.range.start < a.range.end, "chunks of one section overlap");
                let overlap = count_tokens(text[b.range.start..a.range.end].trim());
                assert!(overlap <= o.overlap_tokens + 1, "overlap of {overlap} tokens");
            } else {
                assert!(b.range.start >= a.range.end, "no overlap across a heading");
                assert_eq!(b.range.start, two_at);
            }
        }
        for c in &chunks {
            assert!(c.tokens >= o.min_tokens, "even split leaves no stub: {} tokens", c.tokens);
        }
    }

    #[test]
    fn output_is_deterministic() {
        let text =
            format!("# A\n\n{}\n\n## B\n\n{}", "alpha beta gamma. ".repeat(300), "delta 🦀 epsilon; ".repeat(300));
        let o = ChunkOptions::default();
        assert_eq!(run(&text, &o), run(&text, &o));
    }

    #[test]
    fn chunks_cite_their_pages() {
        let pages_text = ["first page words. ".repeat(40), "second page words. ".repeat(40), "third. ".repeat(5)];
        let mut text = String::new();
        let mut spans = Vec::new();
        for (n, p) in pages_text.iter().enumerate() {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            let start = text.len();
            text.push_str(p.trim());
            spans.push(PageSpan { page: u32::try_from(n + 1).unwrap_or(0), range: start..text.len() });
        }
        let o = opts(120, 0, 0);
        let chunks = chunk(&text, Some(&spans), &o).expect("chunks");
        check_invariants(&text, &chunks, &o);
        for c in &chunks {
            let pages = c.pages.clone().expect("pages known");
            let first = spans.iter().find(|s| s.page == *pages.start()).expect("page");
            let last = spans.iter().find(|s| s.page == *pages.end()).expect("page");
            assert!(first.range.start <= c.range.start && c.range.start < first.range.end);
            assert!(last.range.start < c.range.end && c.range.end <= last.range.end);
        }
        assert_eq!(chunks.first().and_then(|c| c.pages.clone()), Some(1..=1));
        assert_eq!(chunks.last().and_then(|c| c.pages.clone()).map(|p| *p.end()), Some(3));
        assert_eq!(pages_of(&spans, &(0..text.len())), Some(1..=3));
        assert_eq!(pages_of(&[], &(0..10)), None);
    }
}
