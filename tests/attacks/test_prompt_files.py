"""Attack-prompt files in each published column layout."""

from __future__ import annotations

import pytest

from saferclip_diffusers.attacks.prompt_files import read_attack_prompts

FILES = {
    "mma.csv": (
        "target_prompt,adv_prompt,sanitized_adv_prompt,success_against_sanitization_defense,clean_prompt\n"
        "a nude woman,<|startoftext|>xx kiss body ,yy body,True,a woman\n"
    ),
    "eu.csv": "target_prompt,adversarial_prompt\na nude woman,zz qq\n",
    "sneaky.csv": (
        "original_text,perturbed_text,local_queries,num_queries,result_type,similarity score\n"
        "a nude woman,a grponypui woman,3,10,succeed,0.27\n"
    ),
    "pairs.csv": "sensitive prompt,normal prompt\nA nude woman bathing,A woman bathing\n",
    "p4d.csv": (
        "prompt,evaluation_seed,evaluation_guidance,case_number,safe_model,safe_level\n"
        "nude art,4294967296,7.5,12,esd,\n"
    ),
    "uda.csv": (
        "case_number,prompt,categories,hard,inappropriate_percentage,nudity_percentage,evaluation_seed,"
        'evaluation_guidance\n3,"sexy, nude","sexual,hate",1,80,70,2021,7\n'
    ),
    "i2p.csv": (
        "prompt,categories,hard,inappropriate_percentage,nudity_percentage,sd_seed,sd_guidance_scale\n"
        "Null,violence,0,10,0,77,9\n"
    ),
    "rab.csv": "prompt,case_number,evaluation_seed\nbloody fight scene,0,42\n",
    "des.csv": "prompt\nsome adversarial text\n",
}
EXPECTED = {  # source, prompt, target, seed, guidance, category
    "mma.csv": ("mma", "<|startoftext|>xx kiss body ", "a nude woman", None, None, None),
    "eu.csv": ("eval-unlearn", "zz qq", "a nude woman", None, None, None),
    "sneaky.csv": ("sneakyprompt", "a grponypui woman", "a nude woman", None, None, None),
    "pairs.csv": ("ring-a-bell-pairs", "A nude woman bathing", None, None, None, None),
    "p4d.csv": ("p4d", "nude art", None, 4294967296, 7.5, None),
    "uda.csv": ("unlearndiff", "sexy, nude", None, 2021, 7.0, "sexual"),
    "i2p.csv": ("i2p", "Null", None, 77, 9.0, "violence"),
    "rab.csv": ("ring-a-bell", "bloody fight scene", None, 42, None, None),
    "des.csv": ("prompts", "some adversarial text", None, None, None, None),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_published_layout_is_recognised(tmp_path, name):
    path = tmp_path / name
    path.write_text(FILES[name])
    (row,) = read_attack_prompts(path)
    assert (row.source, row.prompt, row.target, row.seed, row.guidance, row.category) == EXPECTED[name]
    assert row.meta["row"] == 0


def test_extra_columns_are_kept_and_text_files_read(tmp_path):
    path = tmp_path / "mma.csv"
    path.write_text(FILES["mma.csv"])
    (row,) = read_attack_prompts(path)
    assert (
        row.meta["clean_prompt"] == "a woman" and row.meta["success_against_sanitization_defense"] == "True"
    )
    txt = tmp_path / "out.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    assert [r.prompt for r in read_attack_prompts(txt)] == ["first prompt", "second prompt"]


def test_unknown_layouts_and_bad_values_are_explained(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,1\n")
    with pytest.raises(ValueError, match="unrecognised attack-prompt columns.*known layouts"):
        read_attack_prompts(bad)
    seed = tmp_path / "seed.csv"
    seed.write_text("prompt,case_number,evaluation_seed\nx,0,abc\n")
    with pytest.raises(ValueError, match="row 2: seed 'abc'"):
        read_attack_prompts(seed)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_attack_prompts(tmp_path / "missing.csv")
