"""Knowledge distillation: a small student learns from a large teacher's soft predictions.

Taught in ``lessons/03_distillation.ipynb``; practised in ``solutions/lab3_distillation.ipynb``
(whose hidden tests compare the students' code with this module).

* the maths: :func:`softmax_with_temperature` (``softmax(z / T)``: a larger T softens the
  distribution, so the teacher's small probabilities, its "dark knowledge", show) and
  :func:`distillation_loss` (Hinton et al. 2015:
  ``alpha * CE(y, student) + (1 - alpha) * T**2 * KL(teacher_T || student_T)``), with
  :func:`loss_gradient_norms` showing why the ``T**2`` is there;
* dark knowledge: :func:`temperature_table` (one example's soft targets per temperature, the
  table behind ``helpers.widgets.temperature_explorer``), :func:`class_similarity` and
  :func:`similar_classes` (which classes the teacher finds alike), :func:`entropy_bits`;
* training: :class:`Distiller`, a Keras 2 model whose ``train_step`` runs the teacher and
  the student on the same batch and updates only the student;
* the fair experiment: :func:`student_cnn` (LeNet-5 made narrow, 11.5x fewer parameters),
  :func:`train_student` (the converged recipe ``RECIPE``, from scratch on the labelled images
  or distilled on every image with ``UNLABELLED`` marking the labels it may not use; the
  teacher runs online on each augmented batch; cached like ``models.pretrained``),
  :func:`labelled_subset` and :func:`training_set` (who sees what);
* the lesson's experiments: :func:`label_scarce` and :func:`summarize` (a student with 100 to
  4,000 labels, scratch vs distilled over seeds, the share of the teacher gap closed) and
  :func:`omitted_class` with :func:`bias_shift` (Hinton's student that never saw a 3).
"""
from helpers.distillation.loss import (ENTROPY_BITS, TEMPERATURES, UNLABELLED, class_similarity,
                                       distillation_loss, entropy_bits, loss_gradient_norms,
                                       similar_classes, softmax_with_temperature,
                                       temperature_table)
from helpers.distillation.training import (Distiller, student_cnn, METHODS, RECIPE,
                                           labelled_subset, training_set, train_student)
from helpers.distillation.experiments import (LABEL_COUNTS, label_scarce, summarize, bias_shift,
                                              omitted_class)

__all__ = ["UNLABELLED", "ENTROPY_BITS", "softmax_with_temperature", "distillation_loss",
           "loss_gradient_norms", "TEMPERATURES", "entropy_bits", "temperature_table", "class_similarity",
           "similar_classes", "Distiller", "student_cnn", "METHODS", "RECIPE",
           "labelled_subset", "training_set", "train_student", "LABEL_COUNTS", "label_scarce",
           "summarize", "bias_shift", "omitted_class"]
