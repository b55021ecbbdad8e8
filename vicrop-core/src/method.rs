//! The three ViCrop maps computed from model signals (method.md section 3), once for every
//! model: head means, the gradient weighting, the chain through a connector, the relative
//! ratio and pure-grad's ratio, mask and block mean.
//!
//! Everything here is plain host arithmetic on `f32`, in a fixed order, so the maps of two
//! models (or of a model and a fake source in tests) are computed identically.

use image::RgbImage;

use crate::filters::{block_mean, high_pass_mask, Plane};
use crate::pil::{resize_rgb8, Filter};
use crate::source::{AttentionSignal, HeadRows, MapGeometry, SignalError};

/// The question the reference uses for the denominator of relative maps (and of pure-grad).
pub const GENERAL_QUESTION: &str = "Write a general description of the image.";

/// Mean over heads: `[heads, len]` -> `[len]` (summed in head order, then divided).
pub fn head_mean(rows: &HeadRows) -> Vec<f32> {
    let mut acc = rows.head(0).to_vec();
    for h in 1..rows.heads() {
        for (a, v) in acc.iter_mut().zip(rows.head(h)) {
            *a += v;
        }
    }
    let n = rows.heads() as f32;
    acc.iter_mut().for_each(|a| *a /= n);
    acc
}

/// grad-att's weighting: `mean over heads of (attention * relu(gradient))` -> `[len]`.
pub fn grad_weighted_mean(attention: &HeadRows, grad: &HeadRows) -> Result<Vec<f32>, SignalError> {
    if (attention.heads(), attention.len()) != (grad.heads(), grad.len()) {
        return Err(SignalError::Mismatch(format!(
            "the gradient is [{}, {}] but the attention is [{}, {}]",
            grad.heads(),
            grad.len(),
            attention.heads(),
            attention.len()
        )));
    }
    let values: Vec<f32> = attention
        .values()
        .iter()
        .zip(grad.values())
        .map(|(a, g)| a * g.max(0.0))
        .collect();
    Ok(head_mean(&HeadRows::new(
        attention.heads(),
        attention.len(),
        values,
    )?))
}

/// The chain `s @ Q`: token weights `s` (`[tokens]`) through the connector's head-reduced
/// attention `q` (`[tokens, patches]`, row-major) -> `[patches]`.
pub fn chain(s: &[f32], q: &[f32], patches: usize) -> Result<Vec<f32>, SignalError> {
    if patches == 0 || q.len() != s.len() * patches {
        return Err(SignalError::Mismatch(format!(
            "the connector holds {} values, not {} tokens x {patches} patches",
            q.len(),
            s.len()
        )));
    }
    let mut out = vec![0f32; patches];
    for (t, &w) in s.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(&q[t * patches..(t + 1) * patches]) {
            *o += w * v;
        }
    }
    Ok(out)
}

/// The attention map of one signal over the patches: head means (`weighted`: grad-att's
/// `attention * relu(gradient)` per factor), chained through the connector when there is one.
pub fn attention_map(signal: &AttentionSignal, weighted: bool) -> Result<Vec<f32>, SignalError> {
    let reduce = |rows: &HeadRows, grad: Option<&HeadRows>, what: &'static str| {
        if weighted {
            grad_weighted_mean(rows, grad.ok_or(SignalError::MissingGradient(what))?)
        } else {
            Ok(head_mean(rows))
        }
    };
    let s = reduce(
        &signal.text,
        signal.text_grad.as_ref(),
        "the language-model attention",
    )?;
    match &signal.connector {
        None => Ok(s),
        Some(conn) => {
            let tokens = s.len();
            if conn.len() % tokens != 0 {
                return Err(SignalError::Mismatch(format!(
                    "the connector's {} values per head are not a multiple of its {tokens} tokens",
                    conn.len()
                )));
            }
            let q = reduce(
                conn,
                signal.connector_grad.as_ref(),
                "the connector attention",
            )?;
            chain(&s, &q, conn.len() / tokens)
        }
    }
}

/// rel-att: `question / general`, elementwise, no epsilon (the reference's division; a zero
/// denominator gives inf or NaN, which the crop selector tolerates).
pub fn ratio(question: &[f32], general: &[f32]) -> Result<Vec<f32>, SignalError> {
    if question.len() != general.len() {
        return Err(SignalError::Mismatch(format!(
            "the question's map has {} values, the general one {}",
            question.len(),
            general.len()
        )));
    }
    Ok(question.iter().zip(general).map(|(a, b)| a / b).collect())
}

/// pure-grad's high-pass mask: the WHOLE original image resized to `side x side` with PIL
/// bilinear (the reference's choice, even where the encoder saw a centre crop), true where the
/// median-filtered high-frequency energy exceeds its median. `side * side` values.
pub fn high_pass(image: &RgbImage, side: u32) -> Vec<bool> {
    let small = resize_rgb8(image, side, side, Filter::Bilinear);
    high_pass_mask(&small).1
}

/// pure-grad: `(question / general)` gradient norms, zeroed outside the mask, averaged over
/// `patch x patch` blocks, kept on the `grid x grid` the encoder uses (a ragged border is
/// dropped). Inputs are `input_side * input_side` planes.
pub fn pure_grad(
    question: &[f32],
    general: &[f32],
    mask: &[bool],
    geometry: MapGeometry,
) -> Result<Vec<f32>, SignalError> {
    let n = geometry.input_side as usize;
    for (what, len) in [
        ("question gradient", question.len()),
        ("general gradient", general.len()),
        ("mask", mask.len()),
    ] {
        if len != n * n {
            return Err(SignalError::Mismatch(format!(
                "the {what} has {len} values, not {n} x {n}"
            )));
        }
    }
    let data: Vec<f32> = question
        .iter()
        .zip(general)
        .zip(mask)
        // `0 * x` rather than `0`: a NaN ratio stays NaN, as in the reference's product.
        .map(|((a, b), &m)| if m { a / b } else { 0.0 * (a / b) })
        .collect();
    let plane = Plane {
        width: n,
        height: n,
        data,
    };
    let reduced = block_mean(&plane, geometry.patch as usize);
    let g = geometry.grid;
    let mut values = Vec::with_capacity(g * g);
    for y in 0..g {
        for x in 0..g {
            values.push(reduced.at(x, y));
        }
    }
    Ok(values)
}
