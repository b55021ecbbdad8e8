//! The InstructBLIP network ([`InstructBlip`]) and a loaded checkpoint with its processor,
//! tokenizers and generation settings ([`InstructBlipModel`]), which answers questions and
//! hands out ViCrop's raw signals.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    DType, Tensor,
};
use image::RgbImage;

use crate::blip::BlipVision;
use crate::config::{read_json, GenerationConfig};
use crate::error::{ModelError, Result};
use crate::llama::argmax_host;
use crate::llama::{KvCache, Llama, Probe};
use crate::llava::Generation;
use crate::nn::to_host;
use crate::nn::{Linear, LoadCtx};
use crate::processor::ClipImageProcessor;
use crate::qformer::{CrossProbe, QFormer};
use crate::tokenizer::Tokenizer;
use crate::weights::Checkpoint;
use crate::{Answer, LoadOptions};

use super::config::{InstructBlipConfig, InstructBlipSpec};
use super::processor::{instructblip_prompt, load_image_processor, load_qformer_tokenizer};

/// Where each part of the network lives in the checkpoint (transformers 4.47 names).
///
/// | part | tensors |
/// |---|---|
/// | vision | `vision_model.embeddings.{class_embedding [1,1,dv], patch_embedding.{weight [dv,3,p,p], bias}, position_embedding [1,1+g*g,dv]}`, `vision_model.encoder.layers.{i}.{layer_norm1, self_attn.{qkv.{weight [3dv,dv], bias [3dv]}, projection}, layer_norm2, mlp.{fc1, fc2}}`, `vision_model.post_layernorm` |
/// | queries | `query_tokens [1, n_queries, dq]` |
/// | Q-Former | `qformer.embeddings.{word_embeddings, position_embeddings, layernorm}`, `qformer.encoder.layer.{i}.{attention, crossattention (i % freq == 0)}.{attention.{query, key, value}, output.{dense, LayerNorm}}`, `.{intermediate, intermediate_query}.dense`, `.{output, output_query}.{dense, LayerNorm}` |
/// | projection | `language_projection.{weight [dt,dq], bias}` |
/// | LLM | `language_model.model.*`, `language_model.lm_head.weight` (see [`Llama`]) |
pub mod names {
    /// The vision transformer.
    pub const VISION: &str = "vision_model";
    /// The learned query tokens.
    pub const QUERY_TOKENS: &str = "query_tokens";
    /// The Q-Former.
    pub const QFORMER: &str = "qformer";
    /// The Q-Former -> LLM projection.
    pub const PROJECTION: &str = "language_projection";
    /// The language model.
    pub const LLM: &str = "language_model";
}

/// The InstructBLIP network.
#[derive(Module, Debug)]
pub struct InstructBlip<B: Backend> {
    #[module(skip)]
    spec: InstructBlipSpec,
    vision: BlipVision<B>,
    qformer: QFormer<B>,
    projection: Linear<B>,
    llm: Llama<B>,
}

impl<B: Backend> InstructBlip<B> {
    /// Builds the network from checkpoint weights; every tensor of the checkpoint must be used.
    pub fn load(
        ckpt: &Checkpoint,
        spec: &InstructBlipSpec,
        device: &B::Device,
        dtype: DType,
    ) -> Result<Self> {
        let ctx = LoadCtx::<B> {
            ckpt,
            device,
            dtype,
        };
        let vision = BlipVision::load(&ctx, names::VISION, &spec.vision, spec.vision_act)?;
        let qformer = QFormer::load(
            &ctx,
            names::QUERY_TOKENS,
            names::QFORMER,
            &spec.qformer,
            spec.qformer_act,
            spec.num_query_tokens,
        )?;
        let projection = Linear::load(
            &ctx,
            names::PROJECTION,
            spec.qformer.hidden_size,
            spec.text.hidden_size,
            true,
        )?;
        let llm = Llama::load(&ctx, names::LLM, &spec.text)?;
        ckpt.check_all_used()?;
        Ok(Self {
            spec: spec.clone(),
            vision,
            qformer,
            projection,
            llm,
        })
    }

    /// The same weights on an autodiff backend (no copy; weights are not tracked).
    pub fn lift<A: AutodiffBackend<InnerBackend = B>>(&self) -> InstructBlip<A> {
        AutodiffModule::from_inner(self.clone())
    }

    /// The validated configuration.
    pub fn spec(&self) -> &InstructBlipSpec {
        &self.spec
    }

    /// The vision transformer.
    pub fn vision(&self) -> &BlipVision<B> {
        &self.vision
    }

    /// The Q-Former.
    pub fn qformer(&self) -> &QFormer<B> {
        &self.qformer
    }

    /// The language model.
    pub fn llm(&self) -> &Llama<B> {
        &self.llm
    }

    /// Vision states the Q-Former reads. `pixels: [n, 3, r, r]` -> `[n, 1 + patches, dv]`.
    pub fn vision_states(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        self.vision.forward(pixels)
    }

    /// Q-Former query outputs, before the projection.
    ///
    /// `states: [n, 1 + patches, dv]`, `qformer_ids`: the instruction ->
    /// `[n, queries, dq]` and, when probed, the cross-attention
    /// `[n, heads_q, queries, 1 + patches]` (f32).
    pub fn query_outputs(
        &self,
        states: Tensor<B, 3>,
        qformer_ids: &[u32],
        probe: Option<CrossProbe>,
    ) -> Result<(Tensor<B, 3>, Option<Tensor<B, 4>>)> {
        let out = self.qformer.forward(states, qformer_ids, probe)?;
        Ok((out.queries, out.cross))
    }

    /// The language projection. `queries: [n, queries, dq]` -> `[n, queries, dt]`.
    pub fn project(&self, queries: Tensor<B, 3>) -> Tensor<B, 3> {
        self.projection.forward(queries)
    }

    /// LLM input embeddings: the projected queries of every image in order, then the embedded
    /// prompt ids (which start with BOS).
    ///
    /// `projected: [n, queries, dt]`, `ids: [len]` -> `[1, n*queries + len, dt]`.
    pub fn embed(&self, projected: Tensor<B, 3>, ids: &[u32]) -> Result<Tensor<B, 3>> {
        let [n, nq, dt] = projected.dims();
        let text = self.llm.embed_ids(ids)?; // [len, dt]
        let images = projected.reshape([n * nq, dt]);
        Ok(Tensor::cat(vec![images, text], 0).unsqueeze())
    }
}

/// Which attentions [`InstructBlipModel::generate_probed`] hands out from its prefill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalProbe {
    /// LLM decoder layer (0-based; ViCrop's default is 15 of 32).
    pub llm_layer: usize,
    /// Q-Former cross-attention index (0-based; ViCrop's default is 2 = layer 4).
    pub cross_index: usize,
}

/// The raw attention signals of one image and one question, on the host, f32.
///
/// Row-major layouts: `llm_row[h * n_queries + q]`, `cross[(h * n_queries + q) * patches + p]`
/// (the CLS key column dropped; patch `p` is row-major over the `grid x grid` patches).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSignals {
    /// LLM attention heads.
    pub llm_heads: usize,
    /// Q-Former attention heads.
    pub cross_heads: usize,
    /// Query tokens of the image.
    pub n_queries: usize,
    /// Image patches (`grid * grid`).
    pub patches: usize,
    /// Last prompt token's post-softmax attention over the image's query positions,
    /// `[llm_heads, n_queries]`.
    pub llm_row: Vec<f32>,
    /// Q-Former cross-attention from the queries to the patches, `[cross_heads, n_queries,
    /// patches]`.
    pub cross: Vec<f32>,
    /// `d log p(top) / d llm_row` (when asked), same layout.
    pub llm_row_grad: Option<Vec<f32>>,
    /// `d log p(top) / d cross` (when asked), same layout.
    pub cross_grad: Option<Vec<f32>>,
    /// The top first answer token whose log-probability was differentiated (when asked).
    pub top_token: Option<u32>,
}

/// A loaded InstructBLIP checkpoint: network, image processor, tokenizers, generation settings.
#[derive(Debug, Clone)]
pub struct InstructBlipModel<B: Backend> {
    net: InstructBlip<B>,
    processor: ClipImageProcessor,
    tokenizer: Tokenizer,
    qformer_tokenizer: Tokenizer,
    eos: Vec<u32>,
    zero_to_two: bool,
    dir: PathBuf,
    device: B::Device,
    dtype: DType,
}

impl<B: Backend> InstructBlipModel<B> {
    /// Loads a model folder as `save_pretrained` writes it: `config.json`, weights (single or
    /// sharded safetensors), `preprocessor_config.json`, `tokenizer.json`,
    /// `qformer_tokenizer/tokenizer.json`, optional `generation_config.json`.
    pub fn load(dir: &Path, device: &B::Device, options: LoadOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::NotFound {
                what: "model folder",
                path: dir.to_path_buf(),
            });
        }
        let config_path = dir.join("config.json");
        let cfg: InstructBlipConfig = read_json(&config_path)?;
        let spec = InstructBlipSpec::from_config(&cfg, &config_path)?;
        let processor = load_image_processor(dir, spec.vision.image_size)?;
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let qformer_tokenizer = load_qformer_tokenizer(dir)?;
        let gen_path = dir.join("generation_config.json");
        let generation: GenerationConfig = if gen_path.is_file() {
            read_json(&gen_path)?
        } else {
            GenerationConfig::default()
        };
        let eos = eos_ids(&spec, &generation);
        let ckpt = Checkpoint::open(dir)?.with_progress(options.progress.clone());
        let net = InstructBlip::load(&ckpt, &spec, device, options.dtype)
            .map_err(|e| query_count_error(e, &spec, &config_path))?;
        tracing::info!(dir = %dir.display(), "loaded InstructBLIP checkpoint");
        Ok(Self {
            net,
            processor,
            tokenizer,
            qformer_tokenizer,
            eos,
            zero_to_two: spec.text_ids.zero_to_two(),
            dir: dir.to_path_buf(),
            device: device.clone(),
            dtype: options.dtype,
        })
    }

    /// The network.
    pub fn net(&self) -> &InstructBlip<B> {
        &self.net
    }

    /// The validated configuration.
    pub fn spec(&self) -> &InstructBlipSpec {
        &self.net.spec
    }

    /// The image processor (`BlipImageProcessor`: squash to `image_size`, no crop).
    pub fn processor(&self) -> &ClipImageProcessor {
        &self.processor
    }

    /// The language model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The Q-Former's WordPiece tokenizer.
    pub fn qformer_tokenizer(&self) -> &Tokenizer {
        &self.qformer_tokenizer
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The device.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// End-of-sequence ids greedy generation stops at.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Replaces the end-of-sequence ids (e.g. to stop at Vicuna's `</s>` = 2 where a config
    /// says otherwise).
    pub fn set_eos_ids(&mut self, eos: Vec<u32>) {
        self.eos = eos;
    }

    /// Number of LLM decoder layers.
    pub fn num_llm_layers(&self) -> usize {
        self.net.llm.num_layers()
    }

    /// Number of Q-Former cross-attention layers (valid cross indices are `0..` this).
    pub fn num_cross_layers(&self) -> usize {
        self.net.qformer.num_cross_layers()
    }

    /// Query tokens per image (LLM positions one image takes).
    pub fn num_query_tokens(&self) -> usize {
        self.net.spec.num_query_tokens
    }

    /// Patches per side of the vision transformer (`image_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.net.spec.vision.grid()
    }

    /// Patch side in pixels.
    pub fn patch_size(&self) -> usize {
        self.net.spec.vision.patch_size
    }

    /// Input side of the vision transformer in pixels.
    pub fn image_size(&self) -> usize {
        self.net.spec.vision.image_size
    }

    /// LLM prompt ids of `question` (BOS, then `"Question: {q} Short answer:"`).
    pub fn prompt_ids(&self, question: &str) -> Result<Vec<u32>> {
        check_question(question)?;
        self.tokenizer.encode(&instructblip_prompt(question), true)
    }

    /// Q-Former ids of `question` (`[CLS] Question: {q} Short answer: [SEP]`).
    pub fn qformer_ids(&self, question: &str) -> Result<Vec<u32>> {
        check_question(question)?;
        self.qformer_tokenizer
            .encode(&instructblip_prompt(question), true)
    }

    /// Positions the language model holds (`text_config.max_position_embeddings`).
    pub fn context_length(&self) -> usize {
        self.net.spec().text.max_position_embeddings
    }

    /// Length of the LLM sequence for `question` with `n_images` images (prefill positions).
    pub fn llm_seq_len(&self, question: &str, n_images: usize) -> Result<usize> {
        Ok(n_images * self.num_query_tokens() + self.prompt_ids(question)?.len())
    }

    /// Pixel values `[n, 3, r, r]` for images.
    pub fn pixel_values(&self, images: &[&RgbImage]) -> Result<Tensor<B, 4>> {
        self.processor
            .pixel_values(images, &self.device, self.dtype)
    }

    /// Vision states of images, `[n, 1 + patches, dv]`: what the Q-Former reads. One image's
    /// states can be reused across questions (`narrow(0, i, 1)` picks image `i`).
    pub fn encode_images(&self, images: &[&RgbImage]) -> Result<Tensor<B, 3>> {
        self.net.vision_states(self.pixel_values(images)?)
    }

    /// Q-Former and projection for vision states and a question: `states: [n, 1 + patches,
    /// dv]` -> projected queries `[n, queries, dt]` and, when `cross` is given, the probed
    /// cross-attention `[n, heads_q, queries, 1 + patches]` (f32).
    pub fn project_queries(
        &self,
        states: Tensor<B, 3>,
        question: &str,
        cross: Option<CrossProbe>,
    ) -> Result<(Tensor<B, 3>, Option<Tensor<B, 4>>)> {
        let ids = self.qformer_ids(question)?;
        let (queries, probs) = self.net.query_outputs(states, &ids, cross)?;
        Ok((self.net.project(queries), probs))
    }

    /// LLM input embeddings `[1, n*queries + len, dt]` for projected queries `[n, queries,
    /// dt]` and `question`.
    pub fn embed(&self, projected: Tensor<B, 3>, question: &str) -> Result<Tensor<B, 3>> {
        let ids = self.prompt_ids(question)?;
        self.net.embed(projected, &ids)
    }

    /// Greedy decoding from prompt embeddings: prefill, then one token at a time until an EOS
    /// id or `max_new_tokens`. `cache` may already hold a prefix.
    ///
    /// As transformers' `InstructBlipForConditionalGeneration.generate`, a generated id 0 is
    /// reported as 2 when `text_config.architectures[0]` is `"LLaMAForCausalLM"` (the
    /// Salesforce checkpoints); the model itself is fed the id it chose.
    pub fn generate(
        &self,
        embeds: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        max_new_tokens: usize,
    ) -> Result<Generation> {
        Ok(self.generate_with(embeds, cache, max_new_tokens, None)?.0)
    }

    fn generate_with(
        &self,
        embeds: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        max_new_tokens: usize,
        probe_layer: Option<usize>,
    ) -> Result<(Generation, Option<Tensor<B, 2>>)> {
        let needed = cache.len() + embeds.dims()[1] + max_new_tokens;
        let context = self.context_length();
        if needed > context {
            return Err(ModelError::InvalidInput(format!(
                "max_new_tokens {max_new_tokens} does not fit the context: the prompt takes {} \
                 of the {context} positions in text_config.max_position_embeddings",
                needed - max_new_tokens
            )));
        }
        let mut token_ids = Vec::new();
        let mut stopped_at_eos = false;
        let mut first_token_at = None;
        if max_new_tokens == 0 && probe_layer.is_none() {
            return Ok((
                Generation {
                    token_ids,
                    stopped_at_eos,
                    first_token_at,
                },
                None,
            ));
        }
        let llm = &self.net.llm;
        let mut out = llm.forward(embeds, cache, probe_layer.map(Probe::through))?;
        let row = out.probe.take();
        while token_ids.len() < max_new_tokens {
            let hidden = out
                .hidden
                .take()
                .ok_or_else(|| ModelError::InvalidInput("decoder stopped early".into()))?;
            let t = hidden.dims()[0];
            let next = argmax_host(llm.logits(hidden.narrow(0, t - 1, 1)))?;
            first_token_at.get_or_insert_with(Instant::now);
            if self.eos.contains(&next) {
                stopped_at_eos = true;
                break;
            }
            // transformers rewrites 0 as 2 in the returned ids (not in what the model reads).
            token_ids.push(if self.zero_to_two && next == 0 {
                2
            } else {
                next
            });
            if token_ids.len() < max_new_tokens {
                out = llm.forward(llm.embed_ids(&[next])?.unsqueeze(), cache, None)?;
            }
        }
        Ok((
            Generation {
                token_ids,
                stopped_at_eos,
                first_token_at,
            },
            row,
        ))
    }

    /// Greedy answer from vision states `[n, 1 + patches, dv]` (images in order), also handing
    /// out the prefill's attention signals for the FIRST image when `probe` is given.
    pub fn generate_probed(
        &self,
        states: Tensor<B, 3>,
        question: &str,
        max_new_tokens: usize,
        probe: Option<SignalProbe>,
    ) -> Result<(Generation, Option<AttentionSignals>)> {
        let cross = probe.map(|p| CrossProbe {
            index: p.cross_index,
            grad_leaf: false,
        });
        let (projected, cross_probs) = self.project_queries(states, question, cross)?;
        let embeds = self.embed(projected, question)?;
        let mut cache = self.net.llm.new_cache();
        let (generation, row) = self.generate_with(
            embeds,
            &mut cache,
            max_new_tokens,
            probe.map(|p| p.llm_layer),
        )?;
        let signals = match (row, cross_probs) {
            (Some(row), Some(cross)) => Some(self.signals(row, cross, None, None, None)?),
            _ => None,
        };
        Ok((generation, signals))
    }

    /// Decodes generated ids into trimmed answer text (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer.decode(ids)?.trim().to_string())
    }

    /// Answers `question` about `images` (several images: all their queries, in order, before
    /// the prompt), greedy.
    pub fn answer(
        &self,
        images: &[&RgbImage],
        question: &str,
        max_new_tokens: usize,
    ) -> Result<Answer> {
        check_question(question)?;
        let states = self.encode_images(images)?;
        let (generation, _) = self.generate_probed(states, question, max_new_tokens, None)?;
        Ok(Answer {
            text: self.decode(&generation.token_ids)?,
            token_ids: generation.token_ids,
        })
    }

    /// ViCrop's attention signals for ONE image's vision states (`[1, 1 + patches, dv]`) and
    /// `question`: the last prompt token's attention at `llm_layer` over the image's query
    /// positions, and the Q-Former cross-attention number `cross_index`.
    ///
    /// With `with_grad`, both come with `d log p(top) / d attention` from one backward pass
    /// (the network runs on `Autodiff<B>`, the two attentions as leaves); without, the LLM
    /// stops after `llm_layer`.
    pub fn attention_signals(
        &self,
        state: Tensor<B, 3>,
        question: &str,
        llm_layer: usize,
        cross_index: usize,
        with_grad: bool,
    ) -> Result<AttentionSignals> {
        let n = state.dims()[0];
        if n != 1 {
            return Err(ModelError::InvalidInput(format!(
                "attention signals take the vision states of one image, got {n}"
            )));
        }
        let qf_ids = self.qformer_ids(question)?;
        let ids = self.prompt_ids(question)?;
        if !with_grad {
            let cross = CrossProbe {
                index: cross_index,
                grad_leaf: false,
            };
            let (queries, probs) = self.net.query_outputs(state, &qf_ids, Some(cross))?;
            let embeds = self.net.embed(self.net.project(queries), &ids)?;
            let mut cache = self.net.llm.new_cache();
            let out = self
                .net
                .llm
                .forward(embeds, &mut cache, Some(Probe::stop_at(llm_layer)))?;
            let (row, cross) = both(out.probe, probs)?;
            return self.signals(row, cross, None, None, None);
        }
        let net = self.net.lift::<Autodiff<B>>();
        let state = Tensor::<Autodiff<B>, 3>::from_inner(state);
        let cross = CrossProbe {
            index: cross_index,
            grad_leaf: true,
        };
        let (queries, probs) = net.query_outputs(state, &qf_ids, Some(cross))?;
        let embeds = net.embed(net.project(queries), &ids)?;
        let mut cache = net.llm.new_cache();
        let probe = Probe {
            layer: llm_layer,
            stop_after: false,
            grad_leaf: true,
        };
        let out = net.llm.forward(embeds, &mut cache, Some(probe))?;
        let hidden = out
            .hidden
            .ok_or_else(|| ModelError::InvalidInput("forward incomplete".into()))?;
        let (row, cross) = both(out.probe, probs)?;
        let (value, top) = net.llm.top_log_prob(hidden)?;
        let grads = value.backward();
        let no_grad =
            |what: &str| ModelError::InvalidInput(format!("no gradient reached the {what}"));
        let row_grad = row
            .grad(&grads)
            .ok_or_else(|| no_grad("LLM attention row"))?;
        let cross_grad = cross
            .grad(&grads)
            .ok_or_else(|| no_grad("Q-Former cross-attention"))?;
        self.signals(
            row.inner(),
            cross.inner(),
            Some(row_grad),
            Some(cross_grad),
            Some(top),
        )
    }

    /// Host-side signals of the first image from the probed tensors: `row: [heads, len]` (its
    /// queries at positions `0..n_queries`), `cross: [n, heads_q, n_queries, 1 + patches]`.
    fn signals(
        &self,
        row: Tensor<B, 2>,
        cross: Tensor<B, 4>,
        row_grad: Option<Tensor<B, 2>>,
        cross_grad: Option<Tensor<B, 4>>,
        top_token: Option<u32>,
    ) -> Result<AttentionSignals> {
        let nq = self.num_query_tokens();
        let [llm_heads, _] = row.dims();
        let [_, cross_heads, _, tokens] = cross.dims();
        let patches = tokens - 1;
        let row_part = |r: Tensor<B, 2>| to_host(r.narrow(1, 0, nq));
        let cross_part = |c: Tensor<B, 4>| to_host(c.narrow(0, 0, 1).narrow(3, 1, patches));
        Ok(AttentionSignals {
            llm_heads,
            cross_heads,
            n_queries: nq,
            patches,
            llm_row: row_part(row)?,
            cross: cross_part(cross)?,
            llm_row_grad: row_grad.map(row_part).transpose()?,
            cross_grad: cross_grad.map(cross_part).transpose()?,
            top_token,
        })
    }

    /// ViCrop's input-gradient signal: the per-pixel L2 norm over channels of
    /// `d log p(top) / d pixel_values` for `question` about `image`, `[r * r]` row-major.
    pub fn pixel_grad_norm(&self, image: &RgbImage, question: &str) -> Result<Vec<f32>> {
        let qf_ids = self.qformer_ids(question)?;
        let ids = self.prompt_ids(question)?;
        let net = self.net.lift::<Autodiff<B>>();
        let pixels = self.pixel_values(&[image])?;
        let [_, c, h, w] = pixels.dims();
        let pixels = Tensor::<Autodiff<B>, 4>::from_inner(pixels).require_grad();
        let states = net.vision_states(pixels.clone())?;
        let (queries, _) = net.query_outputs(states, &qf_ids, None)?;
        let embeds = net.embed(net.project(queries), &ids)?;
        let mut cache = net.llm.new_cache();
        let out = net.llm.forward(embeds, &mut cache, None)?;
        let hidden = out
            .hidden
            .ok_or_else(|| ModelError::InvalidInput("forward incomplete".into()))?;
        let (value, _) = net.llm.top_log_prob(hidden)?;
        let grads = value.backward();
        let g = pixels
            .grad(&grads)
            .ok_or_else(|| ModelError::InvalidInput("no gradient reached the pixels".into()))?;
        let g = g.cast(DType::F32).reshape([c, h * w]);
        to_host(g.powi_scalar(2).sum_dim(0).sqrt())
    }
}

/// The end-of-sequence ids transformers' `InstructBlipForConditionalGeneration.generate`
/// stops at: it calls the language model's own `generate`, whose generation config is built
/// from `text_config` (`eos_token_id`, LlamaConfig default 2); the top-level
/// `generation_config.json` is used only if `text_config` names none.
fn eos_ids(spec: &InstructBlipSpec, generation: &GenerationConfig) -> Vec<u32> {
    spec.text_ids
        .eos_token_id
        .as_ref()
        .or(generation.eos_token_id.as_ref())
        .map(|e| e.to_vec())
        .unwrap_or_else(|| vec![2])
}

/// Turns a shape mismatch of `query_tokens` into an error naming `num_query_tokens`.
fn query_count_error(err: ModelError, spec: &InstructBlipSpec, config: &Path) -> ModelError {
    match err {
        ModelError::ShapeMismatch { name, actual, .. }
            if name == names::QUERY_TOKENS
                && actual.len() == 3
                && actual[2] == spec.qformer.hidden_size =>
        {
            ModelError::Config {
                path: config.to_path_buf(),
                message: format!(
                    "num_query_tokens is {} but the checkpoint's `{}` holds {} query tokens",
                    spec.num_query_tokens,
                    names::QUERY_TOKENS,
                    actual[1]
                ),
            }
        }
        other => other,
    }
}

fn check_question(question: &str) -> Result<()> {
    if question.trim().is_empty() {
        return Err(ModelError::InvalidInput("the question is empty".into()));
    }
    Ok(())
}

fn both<B: Backend>(
    row: Option<Tensor<B, 2>>,
    cross: Option<Tensor<B, 4>>,
) -> Result<(Tensor<B, 2>, Tensor<B, 4>)> {
    match (row, cross) {
        (Some(r), Some(c)) => Ok((r, c)),
        _ => Err(ModelError::InvalidInput(
            "an attention probe returned nothing".into(),
        )),
    }
}
