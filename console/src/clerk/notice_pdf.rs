//! (Long because a PDF page is drawn in one pass: layout, fonts, text runs and the barcode share one page state.)
//! The printed bill notice (상수도 요금 고지서) as a PDF, drawn in Rust: one A4
//! page with the customer and premises, the meter reads, the line items with
//! their basis, the amount due, the due date and the payment account, and a
//! bar chart of the last 12 months' usage.
//!
//! [`render`] is a pure function from a [`Notice`] and a TrueType font to PDF
//! bytes. The font (Debian's fonts-nanum, `NanumGothic.ttf`, by default) is
//! embedded as a subset holding only the glyphs the page uses, as a CID font
//! with a `ToUnicode` map, so the text is selectable and searchable and a
//! notice weighs tens of kilobytes, not the font's 4.7 MB.

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo};
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str};
use std::collections::BTreeMap;

/// Where Debian's fonts-nanum puts the regular face.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/nanum/NanumGothic.ttf";

/// Text drawn at most per field, in characters (longer is cut with `…`).
const MAX_FIELD_CHARS: usize = 120;
/// Line items and meter legs drawn at most (the rest are summarised).
const MAX_LINES: usize = 14;
const MAX_LEGS: usize = 4;

/// What a notice shows. Amounts are whole KRW; texts are shown as given
/// (control characters are dropped, long ones cut).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notice {
    /// Who issues the bill, e.g. `대전광역시 상수도사업본부`.
    pub issuer: String,
    /// `2026-10-0000012`, or empty for a bill held for review.
    pub bill_number: String,
    /// The usage month, e.g. `2026-10`.
    pub period: String,
    /// The usage dates, e.g. `2026-10-01 ~ 2026-10-31`.
    pub usage_dates: String,
    pub issued_on: String,
    pub due_on: String,
    pub account_no: String,
    pub customer: String,
    pub address: String,
    /// Usage type as printed, e.g. `가정용`.
    pub usage_type: String,
    pub diameter_mm: i64,
    pub households: i64,
    pub legs: Vec<NoticeLeg>,
    pub usage_m3: i64,
    pub lines: Vec<NoticeLine>,
    pub total_krw: i64,
    /// Still to pay on this bill (total less payments and credits).
    pub open_krw: i64,
    /// Bank and account number the customer pays into.
    pub payment_account: String,
    /// Oldest first; `None` for a month without a bill.
    pub history: Vec<(String, Option<i64>)>,
    /// Printed under the items (estimated reads, held, cancelled, ...).
    pub notes: Vec<String>,
}

/// One meter's reads on the notice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoticeLeg {
    pub meter_id: String,
    /// Reads in m³ as printed (e.g. `212` or `212.000`), start and end.
    pub start: String,
    pub end: String,
    pub usage_m3: i64,
}

/// One line item: label, basis (blocks, rate, rounding) and amount.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoticeLine {
    pub label: String,
    pub basis: String,
    pub amount_krw: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum NoticePdfError {
    #[error("the notice font is not a usable TrueType/OpenType font: {0}")]
    Font(String),
    #[error("subsetting the notice font failed: {0}")]
    Subset(String),
}

/// A parsed-once font: its bytes and the metrics the layout needs.
pub struct NoticeFont {
    data: Vec<u8>,
    units_per_em: f32,
    ascender: f32,
    descender: f32,
    cap_height: f32,
    bbox: [f32; 4],
}

impl std::fmt::Debug for NoticeFont {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeFont")
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl NoticeFont {
    /// Checks `data` is a font with the Hangul and digits a notice needs.
    pub fn new(data: Vec<u8>) -> Result<NoticeFont, NoticePdfError> {
        let face =
            ttf_parser::Face::parse(&data, 0).map_err(|e| NoticePdfError::Font(e.to_string()))?;
        for c in ['고', '지', '서', '0', '9', '원', ','] {
            if face.glyph_index(c).is_none() {
                return Err(NoticePdfError::Font(format!(
                    "it has no glyph for {c:?} (a Korean font such as NanumGothic is needed)"
                )));
            }
        }
        let upem = f32::from(face.units_per_em());
        let b = face.global_bounding_box();
        let k = 1000.0 / upem;
        let font = NoticeFont {
            units_per_em: upem,
            ascender: f32::from(face.ascender()) * k,
            descender: f32::from(face.descender()) * k,
            cap_height: face
                .capital_height()
                .map(|h| f32::from(h) * k)
                .unwrap_or(700.0),
            bbox: [
                f32::from(b.x_min) * k,
                f32::from(b.y_min) * k,
                f32::from(b.x_max) * k,
                f32::from(b.y_max) * k,
            ],
            data: Vec::new(),
        };
        Ok(NoticeFont { data, ..font })
    }

    /// Reads and checks the font file at `path`.
    pub fn load(path: &std::path::Path) -> Result<NoticeFont, NoticePdfError> {
        let data = std::fs::read(path)
            .map_err(|e| NoticePdfError::Font(format!("reading {}: {e}", path.display())))?;
        NoticeFont::new(data)
    }
}

/// Glyphs used so far: old glyph id -> new CID, widths and the text of each.
struct Glyphs<'f> {
    face: ttf_parser::Face<'f>,
    upem: f32,
    remap: subsetter::GlyphRemapper,
    /// By new id: width in 1/1000 em, and the character it shows.
    widths: Vec<f32>,
    chars: BTreeMap<u16, char>,
}

impl<'f> Glyphs<'f> {
    fn new(font: &'f NoticeFont) -> Result<Self, NoticePdfError> {
        let face = ttf_parser::Face::parse(&font.data, 0)
            .map_err(|e| NoticePdfError::Font(e.to_string()))?;
        let mut g = Glyphs {
            face,
            upem: font.units_per_em,
            remap: subsetter::GlyphRemapper::new(),
            widths: Vec::new(),
            chars: BTreeMap::new(),
        };
        g.cid(0, None);
        Ok(g)
    }

    fn advance(&self, old: u16) -> f32 {
        self.face
            .glyph_hor_advance(ttf_parser::GlyphId(old))
            .map(|a| f32::from(a) * 1000.0 / self.upem)
            .unwrap_or(500.0)
    }

    fn cid(&mut self, old: u16, c: Option<char>) -> u16 {
        let new = self.remap.remap(old);
        if usize::from(new) == self.widths.len() {
            let w = self.advance(old);
            self.widths.push(w);
        }
        if let Some(c) = c {
            self.chars.entry(new).or_insert(c);
        }
        new
    }

    fn old_gid(&self, c: char) -> u16 {
        self.face
            .glyph_index(c)
            .or_else(|| self.face.glyph_index('?'))
            .map(|g| g.0)
            .unwrap_or(0)
    }

    /// The string's CIDs, two bytes each (Identity-H).
    fn encode(&mut self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() * 2);
        for c in text.chars() {
            let old = self.old_gid(c);
            let cid = self.cid(old, Some(c));
            out.extend_from_slice(&cid.to_be_bytes());
        }
        out
    }

    /// Width of `text` at `size` points.
    fn width(&self, text: &str, size: f32) -> f32 {
        text.chars()
            .map(|c| self.advance(self.old_gid(c)))
            .sum::<f32>()
            * size
            / 1000.0
    }
}

/// Printable text: no control characters, at most `max` characters.
fn clean(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(max + 1)
        .collect();
    if out.chars().count() > max {
        out = out.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

/// `1234567` -> `1,234,567`; negatives keep their sign.
pub fn won(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const FONT: Name = Name(b"F1");
const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const LEFT: f32 = 42.0;
const RIGHT: f32 = PAGE_W - 42.0;

/// The page being drawn: content plus the glyphs it uses.
struct Page<'f> {
    c: Content,
    g: Glyphs<'f>,
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
    Center,
}

impl Page<'_> {
    fn text(&mut self, x: f32, y: f32, size: f32, align: Align, text: &str) {
        let text = clean(text, MAX_FIELD_CHARS);
        let w = self.g.width(&text, size);
        let x = match align {
            Align::Left => x,
            Align::Right => x - w,
            Align::Center => x - w / 2.0,
        };
        let bytes = self.g.encode(&text);
        self.c.begin_text();
        self.c.set_font(FONT, size);
        self.c.next_line(x, y);
        self.c.show(Str(&bytes));
        self.c.end_text();
    }

    fn gray(&mut self, level: f32) {
        self.c.set_fill_rgb(level, level, level);
    }

    fn fill_rect(&mut self, x: f32, y: f32, w: f32, h: f32, rgb: (f32, f32, f32)) {
        self.c.save_state();
        self.c.set_fill_rgb(rgb.0, rgb.1, rgb.2);
        self.c.rect(x, y, w, h);
        self.c.fill_nonzero();
        self.c.restore_state();
    }

    fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, width: f32) {
        self.c.set_line_width(width);
        self.c.move_to(x1, y1);
        self.c.line_to(x2, y2);
        self.c.stroke();
    }

    fn frame(&mut self, x: f32, y: f32, w: f32, h: f32) {
        self.c.set_line_width(0.8);
        self.c.rect(x, y, w, h);
        self.c.stroke();
    }
}

const BLUE: (f32, f32, f32) = (0.11, 0.33, 0.62);
const PALE: (f32, f32, f32) = (0.91, 0.94, 0.98);

/// Draws the notice; returns the PDF file's bytes.
pub fn render(n: &Notice, font: &NoticeFont) -> Result<Vec<u8>, NoticePdfError> {
    let mut p = Page {
        c: Content::new(),
        g: Glyphs::new(font)?,
    };
    draw(&mut p, n);
    let content = miniz_oxide::deflate::compress_to_vec_zlib(&p.c.finish(), 6);
    let Page { g, .. } = p;

    let subset = subsetter::subset(&font.data, 0, &g.remap)
        .map_err(|e| NoticePdfError::Subset(e.to_string()))?;
    let font_file = miniz_oxide::deflate::compress_to_vec_zlib(&subset, 6);

    let catalog = Ref::new(1);
    let pages = Ref::new(2);
    let page = Ref::new(3);
    let contents = Ref::new(4);
    let type0 = Ref::new(5);
    let cid = Ref::new(6);
    let descriptor = Ref::new(7);
    let file = Ref::new(8);
    let cmap_ref = Ref::new(9);
    let info = Ref::new(10);
    // A subset's name: six capitals (from its glyph count) + the face.
    let tag: String = (0..6)
        .map(|i| (b'A' + ((g.widths.len() >> (i * 4)) % 26) as u8) as char)
        .collect();
    let base = format!("{tag}+NanumGothic");

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(pages);
    pdf.pages(pages).kids([page]).count(1);
    let mut pg = pdf.page(page);
    pg.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
    pg.parent(pages);
    pg.contents(contents);
    pg.resources().fonts().pair(FONT, type0);
    pg.finish();
    pdf.stream(contents, &content).filter(Filter::FlateDecode);

    pdf.type0_font(type0)
        .base_font(Name(base.as_bytes()))
        .encoding_predefined(Name(b"Identity-H"))
        .descendant_font(cid)
        .to_unicode(cmap_ref);
    let system = SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"Identity"),
        supplement: 0,
    };
    let mut cf = pdf.cid_font(cid);
    cf.subtype(CidFontType::Type2)
        .base_font(Name(base.as_bytes()))
        .system_info(system)
        .font_descriptor(descriptor)
        .default_width(1000.0)
        .cid_to_gid_map_predefined(Name(b"Identity"));
    cf.widths().consecutive(0, g.widths.iter().copied());
    cf.finish();
    pdf.font_descriptor(descriptor)
        .name(Name(base.as_bytes()))
        .flags(FontFlags::NON_SYMBOLIC)
        .bbox(Rect::new(
            font.bbox[0],
            font.bbox[1],
            font.bbox[2],
            font.bbox[3],
        ))
        .italic_angle(0.0)
        .ascent(font.ascender)
        .descent(font.descender)
        .cap_height(font.cap_height)
        .stem_v(80.0)
        .font_file2(file);
    pdf.stream(file, &font_file)
        .filter(Filter::FlateDecode)
        .pair(Name(b"Length1"), subset.len() as i32);
    let mut cmap = pdf_writer::types::UnicodeCmap::new(Name(b"Custom"), system);
    for (cid, c) in &g.chars {
        cmap.pair(*cid, *c);
    }
    pdf.cmap(cmap_ref, &cmap.finish());
    let title = format!("상수도 요금 고지서 {} {}", n.period, n.account_no);
    pdf.document_info(info)
        .title(pdf_writer::TextStr(&clean(&title, MAX_FIELD_CHARS)))
        .producer(pdf_writer::TextStr("Waterworks console"));
    Ok(pdf.finish())
}

fn draw(p: &mut Page<'_>, n: &Notice) {
    let mut y = PAGE_H - 60.0;
    // Title band.
    p.fill_rect(LEFT, y - 12.0, RIGHT - LEFT, 40.0, BLUE);
    p.c.save_state();
    p.gray(1.0);
    p.text(LEFT + 14.0, y, 20.0, Align::Left, "상수도 요금 고지서");
    p.text(
        RIGHT - 14.0,
        y + 4.0,
        10.0,
        Align::Right,
        &format!("{} 사용분", period_ko(&n.period)),
    );
    p.text(
        RIGHT - 14.0,
        y - 8.0,
        8.0,
        Align::Right,
        "Water bill notice",
    );
    p.c.restore_state();
    y -= 34.0;
    p.text(LEFT, y, 10.0, Align::Left, &n.issuer);
    let number = if n.bill_number.is_empty() {
        "(보류: 번호 미부여)".to_string()
    } else {
        n.bill_number.clone()
    };
    p.text(
        RIGHT,
        y,
        9.0,
        Align::Right,
        &format!("고지번호 {number}   발행일 {}", n.issued_on),
    );

    // Customer box.
    y -= 16.0;
    let box_h = 78.0;
    p.frame(LEFT, y - box_h, RIGHT - LEFT, box_h);
    let rows: [(&str, String, &str, String); 3] = [
        ("고객번호", n.account_no.clone(), "성명", n.customer.clone()),
        (
            "업종",
            n.usage_type.clone(),
            "구경 / 세대",
            format!("{} mm / {} 세대", n.diameter_mm, n.households),
        ),
        (
            "사용기간",
            n.usage_dates.clone(),
            "사용량",
            format!("{} m³", won(n.usage_m3)),
        ),
    ];
    let mut ry = y - 16.0;
    p.text(LEFT + 10.0, ry, 9.0, Align::Left, "주소");
    p.text(LEFT + 80.0, ry, 10.0, Align::Left, &n.address);
    for (k1, v1, k2, v2) in rows {
        ry -= 18.0;
        p.text(LEFT + 10.0, ry, 9.0, Align::Left, k1);
        p.text(LEFT + 80.0, ry, 10.0, Align::Left, &v1);
        p.text(LEFT + 290.0, ry, 9.0, Align::Left, k2);
        p.text(LEFT + 360.0, ry, 10.0, Align::Left, &v2);
    }
    y -= box_h + 18.0;

    // Meter reads.
    p.text(LEFT, y, 11.0, Align::Left, "계량기 지침");
    y -= 6.0;
    p.fill_rect(LEFT, y - 16.0, RIGHT - LEFT, 16.0, PALE);
    let cols = [LEFT + 8.0, LEFT + 230.0, LEFT + 340.0, RIGHT - 8.0];
    p.text(cols[0], y - 11.0, 9.0, Align::Left, "계량기");
    p.text(cols[1], y - 11.0, 9.0, Align::Right, "전월지침 (m³)");
    p.text(cols[2], y - 11.0, 9.0, Align::Right, "당월지침 (m³)");
    p.text(cols[3], y - 11.0, 9.0, Align::Right, "사용량 (m³)");
    y -= 16.0;
    for leg in n.legs.iter().take(MAX_LEGS) {
        y -= 15.0;
        p.text(cols[0], y, 9.5, Align::Left, &leg.meter_id);
        p.text(cols[1], y, 9.5, Align::Right, &leg.start);
        p.text(cols[2], y, 9.5, Align::Right, &leg.end);
        p.text(cols[3], y, 9.5, Align::Right, &won(leg.usage_m3));
    }
    if n.legs.len() > MAX_LEGS {
        y -= 13.0;
        let more = format!("외 {}개 계량기", n.legs.len() - MAX_LEGS);
        p.text(cols[0], y, 8.5, Align::Left, &more);
    }
    y -= 8.0;
    p.line(LEFT, y, RIGHT, y, 0.5);
    y -= 22.0;

    // Line items.
    p.text(LEFT, y, 11.0, Align::Left, "요금 내역");
    y -= 6.0;
    p.fill_rect(LEFT, y - 16.0, RIGHT - LEFT, 16.0, PALE);
    p.text(LEFT + 8.0, y - 11.0, 9.0, Align::Left, "항목");
    p.text(LEFT + 130.0, y - 11.0, 9.0, Align::Left, "산출 근거");
    p.text(RIGHT - 8.0, y - 11.0, 9.0, Align::Right, "금액 (원)");
    y -= 16.0;
    for line in n.lines.iter().take(MAX_LINES) {
        y -= 15.0;
        p.text(LEFT + 8.0, y, 9.5, Align::Left, &line.label);
        let basis = clean(&line.basis, 62);
        p.text(LEFT + 130.0, y, 8.0, Align::Left, &basis);
        p.text(RIGHT - 8.0, y, 9.5, Align::Right, &won(line.amount_krw));
    }
    if n.lines.len() > MAX_LINES {
        y -= 13.0;
        let rest: i64 = n.lines[MAX_LINES..].iter().map(|l| l.amount_krw).sum();
        let more = format!("외 {}개 항목", n.lines.len() - MAX_LINES);
        p.text(LEFT + 8.0, y, 9.0, Align::Left, &more);
        p.text(RIGHT - 8.0, y, 9.5, Align::Right, &won(rest));
    }
    y -= 8.0;
    p.line(LEFT, y, RIGHT, y, 0.5);
    y -= 16.0;
    p.text(LEFT + 8.0, y, 10.5, Align::Left, "당월 요금 계");
    p.text(RIGHT - 8.0, y, 10.5, Align::Right, &won(n.total_krw));
    if n.open_krw != n.total_krw {
        y -= 15.0;
        p.text(LEFT + 8.0, y, 9.5, Align::Left, "납부·조정된 금액");
        p.text(
            RIGHT - 8.0,
            y,
            9.5,
            Align::Right,
            &won(n.open_krw - n.total_krw),
        );
    }
    for note in n.notes.iter().take(4) {
        y -= 13.0;
        p.text(LEFT + 8.0, y, 8.5, Align::Left, &format!("※ {note}"));
    }

    // Amount due, due date, payment account.
    y -= 22.0;
    let due_h = 58.0;
    p.fill_rect(LEFT, y - due_h, RIGHT - LEFT, due_h, PALE);
    p.frame(LEFT, y - due_h, RIGHT - LEFT, due_h);
    p.text(LEFT + 12.0, y - 22.0, 12.0, Align::Left, "납부하실 금액");
    p.text(
        LEFT + 250.0,
        y - 24.0,
        18.0,
        Align::Right,
        &format!("{} 원", won(n.open_krw)),
    );
    p.text(LEFT + 290.0, y - 20.0, 10.0, Align::Left, "납기일");
    p.text(LEFT + 350.0, y - 20.0, 11.0, Align::Left, &n.due_on);
    p.text(LEFT + 12.0, y - 44.0, 9.0, Align::Left, "납부계좌");
    p.text(LEFT + 80.0, y - 44.0, 10.0, Align::Left, &n.payment_account);
    y -= due_h + 24.0;

    // Usage history: one bar per month, oldest first.
    p.text(LEFT, y, 11.0, Align::Left, "최근 12개월 사용량 (m³)");
    let chart_h = 110.0;
    let base = y - 22.0 - chart_h;
    let months: Vec<&(String, Option<i64>)> = n.history.iter().rev().take(12).rev().collect();
    let max = months
        .iter()
        .filter_map(|(_, v)| *v)
        .max()
        .unwrap_or(0)
        .max(1);
    p.line(LEFT, base, RIGHT, base, 0.6);
    let slot = (RIGHT - LEFT) / 12.0;
    for (i, (period, m3)) in months.iter().enumerate() {
        let x = LEFT + slot * i as f32;
        let cx = x + slot / 2.0;
        let current = i + 1 == months.len();
        if let Some(v) = m3 {
            let h = (*v as f32 / max as f32) * chart_h;
            let color = if current { BLUE } else { (0.55, 0.66, 0.8) };
            p.fill_rect(x + slot * 0.2, base, slot * 0.6, h.max(0.5), color);
            p.text(cx, base + h + 4.0, 8.0, Align::Center, &won(*v));
        } else {
            p.text(cx, base + 4.0, 8.0, Align::Center, "-");
        }
        let label = period
            .split_once('-')
            .map(|(_, m)| format!("{}월", m.trim_start_matches('0')))
            .unwrap_or_else(|| period.clone());
        p.text(cx, base - 12.0, 8.0, Align::Center, &label);
    }

    // Footer.
    p.c.save_state();
    p.gray(0.4);
    p.text(
        LEFT,
        40.0,
        7.5,
        Align::Left,
        "요금은 시 조례의 요금표에 따라 산정되며, 물이용부담금은 수계기금으로 납부됩니다. 문의: 상수도 요금 콜센터",
    );
    p.c.restore_state();
}

/// `2026-10` -> `2026년 10월`.
fn period_ko(p: &str) -> String {
    match p.split_once('-') {
        Some((y, m)) => format!("{y}년 {}월", m.trim_start_matches('0')),
        None => p.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scripts/test installs fonts-nanum; without it this fails, not skips.
    fn font() -> NoticeFont {
        NoticeFont::load(std::path::Path::new(DEFAULT_FONT)).expect("fonts-nanum is installed")
    }

    fn sample() -> Notice {
        Notice {
            issuer: "대전광역시 상수도사업본부".into(),
            bill_number: "2026-10-0000012".into(),
            period: "2026-10".into(),
            usage_dates: "2026-10-01 ~ 2026-10-31".into(),
            issued_on: "2026-11-02".into(),
            due_on: "2026-11-30".into(),
            account_no: "AC001".into(),
            customer: "홍길동".into(),
            address: "대전광역시 서구 둔산로 100".into(),
            usage_type: "가정용".into(),
            diameter_mm: 15,
            households: 1,
            legs: vec![NoticeLeg {
                meter_id: "M1".into(),
                start: "212".into(),
                end: "238".into(),
                usage_m3: 26,
            }],
            usage_m3: 26,
            lines: vec![
                NoticeLine {
                    label: "상수도요금".into(),
                    basis: "0-20 m³ × 430, 21-30 m³ × 590".into(),
                    amount_krw: 12_140,
                },
                NoticeLine {
                    label: "하수도요금".into(),
                    basis: "26 m³".into(),
                    amount_krw: 11_900,
                },
                NoticeLine {
                    label: "물이용부담금".into(),
                    basis: "26 m³ × 170".into(),
                    amount_krw: 4_420,
                },
            ],
            total_krw: 29_460,
            open_krw: 19_460,
            payment_account: "농협 301-0000-0000-00 (예금주: 상수도사업본부)".into(),
            history: (1..=12)
                .map(|m| (format!("2025-{m:02}"), (m != 3).then_some(20 + m)))
                .collect(),
            notes: vec!["추정 검침이 포함되어 있습니다".into()],
        }
    }

    #[test]
    fn amounts_are_grouped_by_thousands() {
        assert_eq!(won(0), "0");
        assert_eq!(won(29_460), "29,460");
        assert_eq!(won(-1_234_567), "-1,234,567");
        assert_eq!(won(100), "100");
        assert_eq!(clean("a\u{7}b", 10), "ab");
        assert_eq!(clean("abcdef", 4), "abc…");
    }

    #[test]
    fn a_non_korean_font_is_refused_with_a_reason() {
        let err = NoticeFont::new(b"not a font".to_vec()).unwrap_err();
        assert!(err.to_string().contains("not a usable"), "{err}");
        let dejavu = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
        if let Ok(data) = std::fs::read(dejavu) {
            let err = NoticeFont::new(data).unwrap_err();
            assert!(err.to_string().contains("Korean font"), "{err}");
        }
    }

    #[test]
    fn the_notice_pdf_parses_and_its_text_reads_back_in_korean() {
        let font = font();
        let pdf = render(&sample(), &font).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        // A subset, not the 4.7 MB face.
        assert!(pdf.len() < 200_000, "{} bytes", pdf.len());
        let doc = lopdf::Document::load_mem(&pdf).expect("a well-formed PDF");
        let pages = doc.get_pages();
        assert_eq!(pages.len(), 1);
        let text = doc.extract_text(&[1]).expect("text extracts");
        for needle in [
            "상수도 요금 고지서",
            "2026년 10월 사용분",
            "홍길동",
            "대전광역시 서구 둔산로 100",
            "2026-10-0000012",
            "상수도요금",
            "12,140",
            "29,460",
            "19,460 원",
            "2026-11-30",
            "농협 301-0000-0000-00",
            "최근 12개월 사용량",
            "10월",
            "추정 검침",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
        // The embedded font is a CID font with a ToUnicode map.
        let fonts = doc.get_page_fonts(pages[&1]).unwrap();
        let f = fonts.values().next().unwrap();
        assert_eq!(f.get(b"Subtype").unwrap().as_name().unwrap(), b"Type0");
        assert!(f.get(b"ToUnicode").is_ok());
    }

    #[test]
    fn hostile_and_huge_inputs_still_make_one_page() {
        let font = font();
        let mut n = sample();
        n.customer = "\u{0}\u{1b}[31m".repeat(50) + &"가".repeat(500);
        n.lines = (0..100)
            .map(|i| NoticeLine {
                label: format!("항목 {i}"),
                basis: "x".repeat(1000),
                amount_krw: i,
            })
            .collect();
        n.legs = vec![NoticeLeg::default(); 20];
        n.history = vec![("bad".into(), Some(i64::MAX)); 30];
        n.bill_number.clear();
        let pdf = render(&n, &font).unwrap();
        let doc = lopdf::Document::load_mem(&pdf).unwrap();
        assert_eq!(doc.get_pages().len(), 1);
        let text = doc.extract_text(&[1]).unwrap();
        assert!(text.contains("외 86개 항목"), "{text}");
        assert!(text.contains("보류"), "{text}");
    }
}
