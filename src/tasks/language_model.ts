/** The language model of any supported folder: a bare causal LM, or the LLM inside an InternVL-Chat checkpoint. */
import type { ResolveModelOptions } from '../core/hub.js';
import { modelResolver } from '../core/io.js';
import { Checkpoint } from '../core/safetensors.js';
import type { SessionOptions } from '../core/session.js';
import { readConfig } from '../models/config.js';
import { CausalLM, parseLlmConfig } from '../models/llm.js';
import { layoutSection, requireCapability } from '../models/registry.js';

/**
 * Loads the language model alone from a model folder or Hugging Face repo id, as `--model`: a chat checkpoint's
 * vision tower is neither built nor kept.
 */
export async function loadLanguageModel(
  idOrPath: string,
  options: { session?: SessionOptions; hub?: ResolveModelOptions } = {},
): Promise<CausalLM> {
  const dir = await (await modelResolver.get())(idOrPath, options.hub);
  const config = await readConfig(dir);
  const layout = requireCapability(config, 'lm').language!;
  const llm = parseLlmConfig(layoutSection(config, layout.section));
  return CausalLM.load(await Checkpoint.open(dir), llm, {
    prefix: layout.prefix,
    variant: layout.variant(llm.family),
    lmHeadPrefix: layout.lmHeadPrefix,
    session: options.session,
  });
}
