// Copy buttons: data-copy="text" or data-copy-target="element-id".
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  event.preventDefault();
  const target = button.dataset.copyTarget && document.getElementById(button.dataset.copyTarget);
  const text = target ? target.innerText : button.dataset.copy;
  navigator.clipboard?.writeText(text).then(() => {
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 1500);
  });
});

// Parts of a form that matter for some choices of a select only:
// data-shown-for="<select id> <value> <value>...". A hidden part is disabled too, so what was
// typed there before the choice changed is not sent. Without JavaScript every part shows.
function showChosenParts() {
  for (const part of document.querySelectorAll("[data-shown-for]")) {
    const [selectId, ...values] = part.dataset.shownFor.split(" ");
    const select = document.getElementById(selectId);
    if (!select) continue;
    const shown = values.includes(select.value);
    part.hidden = !shown;
    const inputs = part.matches("fieldset") ? [part] : part.querySelectorAll("input, select, textarea");
    for (const input of inputs) input.disabled = !shown;
  }
}
document.addEventListener("change", (event) => {
  if (event.target.matches("select")) showChosenParts();
});
document.addEventListener("DOMContentLoaded", showChosenParts);
