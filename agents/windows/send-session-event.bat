@echo off
rem Runs the sessiontrail agent from a Task Scheduler trigger. All arguments are passed on,
rem e.g.: send-session-event.bat -Trigger logon -LogName Security -EventRecordId 1935027
rem -NoProfile: a user's profile script must not change what is sent.
rem -ExecutionPolicy Bypass: for this process only; the machine policy is unchanged.
"%SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe" -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "%~dp0Send-SessionEvent.ps1" %*
exit /b 0
