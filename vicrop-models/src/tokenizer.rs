//! The Hugging Face tokenizer (`tokenizer.json`, through the `tokenizers` crate) and the
//! LLaVA-1.5 prompt.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// The instruction LLaVA-1.5 appends to short-answer questions.
pub const SHORT_ANSWER_SUFFIX: &str = "Answer the question using a single word or phrase.";

/// The image placeholder in prompts before expansion.
pub const IMAGE_TAG: &str = "<image>";

/// The LLaVA-1.5 prompt for `n_images` images (tags before `USER:`, as the ViCrop reference
/// builds it): `"<image>...\nUSER: {question} Answer the question using a single word or
/// phrase.\nASSISTANT:"`.
pub fn llava_prompt(question: &str, n_images: usize) -> String {
    format!(
        "{}\nUSER: {question} {SHORT_ANSWER_SUFFIX}\nASSISTANT:",
        IMAGE_TAG.repeat(n_images)
    )
}

/// Replaces every `<image>` tag with `per_image` copies, as `LlavaProcessor` does.
pub fn expand_image_tags(prompt: &str, per_image: usize) -> String {
    prompt.replace(IMAGE_TAG, &IMAGE_TAG.repeat(per_image))
}

/// A loaded `tokenizer.json`.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::NotFound {
                what: "tokenizer.json",
                path: path.to_path_buf(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: tokenizers::Error) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Token ids of `text`; `special` adds BOS as the tokenizer's post-processor says.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, special).map_err(|e| self.err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| self.err(e))
    }

    /// Id of a token string, if in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
