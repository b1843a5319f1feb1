"""The side-by-side Gradio demo (``saferclip-demo`` / ``python demo/app.py``; command line in ``cli/demo.py``).

- :mod:`.engine`: load the Safer pipeline and run one comparison (no Gradio);
- :mod:`.limits`: bounds on user inputs; :mod:`.screen`: NudeNet verdicts and the blur;
- :mod:`.interpret`: "Interpreted as", nearest COCO captions in each encoder's space;
- :mod:`.indexing`: that caption index built in a background thread, with its progress;
- :mod:`.render`: results as galleries and tables; :mod:`.app`: the ``gr.Blocks`` page and its launch.

Needs the ``[demo]`` extra (checked on import, with the install command in the error); gradio itself is
imported only by :mod:`.app`.
"""

from .._extras import require_extra

require_extra("demo", "gradio", "nudenet", "pandas", feature="the demo")
