/** The language model of any supported folder: a bare causal LM, or the LLM inside an InternVL-Chat checkpoint. */
import { Checkpoint } from '../core/safetensors.js';
import type { SessionOptions } from '../core/session.js';
import { readConfig } from '../models/config.js';
import { CausalLM, parseLlmConfig } from '../models/llm.js';
import { layoutSection, requireCapability } from '../models/registry.js';

/** Loads the language model alone: a chat checkpoint's vision tower is neither built nor kept. */
export async function loadLanguageModel(dir: string, options: { session?: SessionOptions } = {}): Promise<CausalLM> {
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
