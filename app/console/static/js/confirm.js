// A confirmation dialog that says what an action will do before it is done.

import {$} from './dom.js';

/** Resolve to true when the user confirms, false when they cancel (Esc included). */
export function confirmAction({title, body, ok = 'Confirm', danger = false}) {
  const dialog = $('#confirm-dialog');
  $('#confirm-title').textContent = title;
  $('#confirm-body').textContent = body;
  const okButton = $('#confirm-ok');
  okButton.textContent = ok;
  okButton.className = danger ? 'primary danger' : 'primary';
  return new Promise((resolve) => {
    const finish = (answer) => {
      okButton.removeEventListener('click', onOk);
      $('#confirm-cancel').removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onOk = () => finish(true);
    const onCancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    okButton.addEventListener('click', onOk);
    $('#confirm-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
  });
}
