"""Reports: summary tables and one self-contained HTML page per run."""

from neurocore.report._figures import activation_area_chart
from neurocore.report._hint import ConceptExamples, write_hint_report
from neurocore.report._html import write_html_report
from neurocore.report._run import ImageMaps, image_maps, write_run_report
from neurocore.report._tables import layer_summary
from neurocore.report._www import HeatmapExample, NeuronExamples, heatmap_overlay, write_www_report

__all__ = ["write_html_report", "write_hint_report", "ConceptExamples", "layer_summary", "activation_area_chart",
           "write_www_report", "NeuronExamples", "HeatmapExample", "heatmap_overlay",
           "write_run_report", "image_maps", "ImageMaps"]
