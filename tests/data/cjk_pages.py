"""Real Chinese and Japanese pages for the near-dedup and cleaning tests (literals: no cache needed).

The GNU coreutils man pages chgrp(1) and chown(1), as Debian's `manpages-zh` (zh_CN) and
`manpages-ja` ship them, rendered with `zcat f | groff -k -mandoc -Tutf8 -P-cbou -rLL=2000n -rHY=0`,
runs of 3+ spaces collapsed to two and cut after ~1,800 characters. chgrp and chown are distinct
pages on one topic (file ownership) with shared option texts: near dedup must keep both.
Licence: GPL-3.0-or-later (coreutils documentation and its translations).
"""

ZH_CHGRP = """\
CHGRP(1)  用户命令  CHGRP(1)

名称
  chgrp - 修改文件所属组

概述
  chgrp [选项列表]... 组 文件...
  chgrp [选项列表]... --reference=参考文件 文件...

描述
  修改每个文件的所属组为指定的组。 使用参数 --reference 时， 修改每个文件的所属组为参考文件的所属组。

  -c, --changes
  类似 verbose 参数， 但只会在发生变化时才会报告

  -f, --silent, --quiet
  隐藏大多数错误信息

  -v, --verbose
  对于每个文件的处理， 都会打印分析报告

  --dereference
  影响每个符号链接所引用的文件 （默认设置）， 而不是符号链接本身

  -h, --no-dereference
  影响符号链接本身而不是其引用的文件 （只在可以修改符号链接所有权的系统上有效）

  --no-preserve-root
  不对 '/' 特殊处理 （默认设置）

  --preserve-root
  不允许递归执行于 '/'

  --reference=参考文件
  使用参考文件的所属组代替指定所属组

  -R, --recursive
  递归执行于文件和目录

  当指定了 -R 选项时， 下面的几个选项会修改遍历层次目录的方式。 如果指定了以下多个选项， 只有最后一个选项才会生效。

  -H  如果命令行参数是一个指向目录的符号链接， 则遍历该目录

  -L  遍历目录中的每一个符号链接

  -P  不遍历任何一个符号链接 （默认设置）

  --help 显示此帮助信息并退出

  --version
  显示版本信息并退出

范例
  chgrp staff /u
  修改 /u 的所属组为 "staff" 。

  chgrp -hR staff /u
  修改 /u 和其子文件的所属组为 "staff" 。

作者
  由 David MacKenzie 和 Jim Meyering 编写。

报告错误
  GNU coreutils 的在线帮助： <https://www.gnu.org/software/coreutils/>
  请向 <https://translationproject.org/team/zh_CN.html> 报告翻译错误。

版权
  GNU coreutils 9.1
  This is free software: you are free to change and redistribute it.  There is NO WARRANTY, to the extent permitted by law.

参见
  chown(1), chown(2)

  完整文档请见：  <https://www.gnu.org/software/coreutils/chgrp>
  或者在本地使用： info '(coreutils) chgrp invocation'

跋
  本页面中文版由中文 man 手册页计划提供。
  中文 man 手册页计划：https://github.com/man-pages-zh/manpages-zh

GNU coreutils 9.1  2022年9月  CHGRP(1)
"""

ZH_CHOWN = """\
CHOWN(1)  用户命令  CHOWN(1)

名称
  chown - 更改文件属主与属组

概述
  chown [选项]... [所有者][:[组]] 文件...
  chown [选项]... --reference=参考文件 文件...

描述
  本手册页记录 GNU 版本的 chown。chown 变更每个给定文件的用户所有权和/或组所有权。如果只给出了单个所有者信息（用户名或数字用户 ID），则将每个给定文件的所有者设为给出的用户，且不修改文件的属组信息。如果所有者信息后紧接了冒号以及一个用户组名称（或者数字用户组 ID，中间没有空格），则同时相应地变更文件的属组信息。如果所有者信息后紧跟了冒号但冒号后面没有给出用户组信息，则将文件的所有者设为给出的用户，且文件的属组设置为用户的登录用户组。如果指定了冒号和组但省略了所有者，则只修改文件属组信息；在此情况下，chown 的行为与 chgrp 相同。如果只给出了一个冒号或者整个操作符为空，则既不修改所有者也不修改属组。

选项
  修改每个文件的所有者和/或所属组为给定的所有者和/或组。如同时使用 --reference，将每个给定文件的所有者和属组修改为参考文件所具有的对应值。

  -c, --changes
  类似 verbose 选项，但仅在做出修改时进行报告

  -f, --silent, --quiet
  不显示大多数错误消息

  -v, --verbose
  输出各个处理的文件的诊断信息

  --dereference
  影响每个符号链接的原始引用文件（这是默认行为），而非符号链接本身

  -h, --no-dereference
  只影响符号链接，而非被引用的任何文件(仅当系统支持更改符号链接的所有者时，该选项才有用）

  --from=当前所有者:当前所属组
  只当每个文件的所有者和组符合选项所指定时才更改所有者和组。其中一个可以省略，这时已省略的属性就不需要符合原有的属性

  --no-preserve-root
  不特殊对待“/”（默认行为）

  --preserve-root
  不允许在“/”上递归操作

  --reference=参考文件
  使用指定参考文件的所有者和所属组信息，而非手工指定 所有者:组 的值

  -R, --recursive
  递归操作文件和目录

  以下选项是在指定了 -R 选项时被用于设置如何遍历目录结构体系。如果您指定了多于一个选项，那么只有最后一个会生效。

  -H  如果命令行参数是一个指向目录的符号链接，则对其进行遍历

  -L  遍历每一个遇到的指向目录的符号链接

  -P  不遍历任何符号链接（默认）

  --help 显示此帮助信息并退出

  --version
  显示版本信息并退出

  如果没有指定所有者，则不会更改所有者信息。若所属组若没有指定也不会对其更改，但当加上 ':' 时 GROUP 会更改为指定所有者的主要组。所有者和所属组可以是数字或名称。

范例
  chown root /u
  将 /u 的属主更改为"root"。

  chown root:staff /u
  和上面类似，但同时也将其属组更改为"staff"。

  chown -hR root /u
  将 /u 及其子目录下所有文件的属主更改为"root"。

作者
  由 David MacKenzie 和 Jim Meyering 编写。

报告错误
  GNU coreutils 的在线帮助： <https://www.gnu.org/software/coreutils/>
  请向 <https://translationproject.org/team/zh_CN.html> 报告翻译错误。

版权
  Copyright © 2022 Free Software Foundation, Inc.  License GPLv3+: GNU GPL version 3 or later <https://gnu.org/licenses/gpl.html>.
"""

JA_CHGRP = """\
CHGRP(1)  ユーザーコマンド  CHGRP(1)

名前
  chgrp - グループの所有権を変更する

書式
  chgrp [OPTION]... GROUP FILE...
  chgrp [OPTION]... --reference=RFILE FILE...

説明
  各ファイルのグループを GROUP に変更します。 --reference を指定した場合は、各ファイルのグループを RFILE のグループに変更 します。

  -c, --changes
  verbose モードと同様だが、変更が行われた場合にのみ出力する

  -f, --silent, --quiet
  ほとんどのエラーメッセージの出力を抑制する

  -v, --verbose
  処理した各ファイルについて診断メッセージを出力する

  --dereference
  シンボリックリンク自身ではなく、シンボリックリンクの 参照先に対して操作を行う (これがデフォルトの動作)

  -h, --no-dereference
  参照先のファイルではなくシンボリックリンクに適用する (意味があるのは、シンボリックリンクの所有権を変更 できるシステムの場合だけである)

  --no-preserve-root
  '/' を特別扱いしない (デフォルト)

  --preserve-root
  '/' に対する再帰的な操作を失敗させる

  --reference=RFILE
  GROUP の値を指定するのではなく RFILE のグループを 使用する

  -R, --recursive
  ファイルとディレクトリを再帰的に操作する

  以下のオプションを使うと、-R オプションが併せて指定されたときにどのように 階層を辿るかの動作を変更できます。複数のオプションが指定された場合は、 最後に指定されたオプションだけが有効になります。

  -H  コマンドライン引数がディレクトリに対するシンボ リックリンクの場合に、リンクを辿る

  -L  ディレクトリに対するシンボリックリンクに遭遇した 時には、そのリンクを全て辿る

  -P  シンボリックリンクを一切辿らない (デフォルト)

  --help 使い方を表示して終了する

  --version
  バージョン情報を表示して終了する

例
  chgrp staff /u
  /u のグループを "staff" に変更する。

  chgrp -hR staff /u
  /u とその配下のファイルのグループを "staff" に変更する。

  GNU coreutils のオンラインヘルプ: <https://www.gnu.org/software/coreutils/> 翻訳に関するバグは <https://translationproject.org/team/ja.html> に連絡してください。 詳細な文書 <https://www.gnu.org/software/coreutils/chgrp> (ローカルでは info '(coreutils) chgrp invocation' で参照可能)。

作者
  作者 David MacKenzie および Jim Meyering。

著作権
  Copyright © 2020 Free Software Foundation, Inc.  ライセンス GPLv3+: GNU GPL version 3 or later <https://gnu.org/licenses/gpl.html>.
  This is free software: you are free to change and redistribute it.  There is NO WARRANTY, to the extent permitted by law.

関連項目
  chown(1), chown(2)

  chgrp の完全なマニュアルは Texinfo マニュアルとして整備されている。もし、 info および chgrp のプログラムが正しくインストールされているならば、コマンド

  info chgrp
"""

JA_CHOWN = """\
CHOWN(1)  ユーザーコマンド  CHOWN(1)

名前
  chown - ファイルの所有者とグループを変更する

書式
  chown [OPTION]... [OWNER][:[GROUP]] FILE...
  chown [OPTION]... --reference=RFILE FILE...

説明
  このマニュアルページでは GNU バージョンの chown について説明しています。 chown は指定された各ファイルのユーザとグループの所有権を変更します。 所有者 (ユーザ名か数値のユーザ ID) だけが指定された場合、そのユーザが 指定された各ファイルの所有者に設定されます。ユーザ名の後ろにコロン (':') と グループ名 (もしくは数値のグループ ID) が続く場合、ファイルのグループ も設定されます (所有者とコロン以降の間にスペースを入れてはいけません)。 ユーザ名の後ろにグループ名なしでコロンだけが続く場合、 ファイルの所有者がそのユーザに変更され、ファイルのグループが そのユーザのログイングループに変更されます。 ユーザ名は指定されず、コロンとグループだけが指定された場合、 ファイルのグループだけが変更されます。 この場合、chown は chgrp と同じ機能を実行していることになります。 コロンだけが指定された場合や、処理対象が空の場合、所有者もグループも変更されません。

オプション
  各 FILE の所有者とグループを OWNER と GROUP に変更します。 --reference が指定された場合、各ファイルの所有者とグループと RFILE と同じものに変更します。

  -c, --changes
  verbose モードと同様だが、変更が行われた場合にのみ出力する

  -f, --silent, --quiet
  ほとんどのエラーメッセージの出力を抑制する

  -v, --verbose
  処理した各ファイルについて診断メッセージを出力する

  --dereference
  シンボリックリンク自身ではなく、シンボリックリンクの 参照先に対して操作を行う (これがデフォルトの動作)

  -h, --no-dereference
  参照先のファイルではなくシンボリックリンクに適用する (意味があるのは、シンボリックリンクの所有権を変更 できるシステムの場合だけである)

  --from=CURRENT_OWNER:CURRENT_GROUP
  ここで指定した現在の所有者やグループと一致した場合に のみ各ファイルの所有者およびグループを変更する。いず れかは省略可能であり、省略された属性は一致検査が行わ れない。

  --no-preserve-root
  '/' を特別扱いしない (デフォルト)

  --preserve-root
  '/' に対する再帰的な操作を失敗させる

  --reference=RFILE
  OWNER:GROUP の値を指定する代わりに RFILE の所有者とグループを使用します

  -R, --recursive
  ファイルとディレクトリを再帰的に操作する

  以下のオプションを使うと、-R オプションが併せて指定されたときにどのように 階層を辿るかの動作を変更できます。複数のオプションが指定された場合は、 最後に指定されたオプションだけが有効になります。

  -H  コマンドライン引数がディレクトリに対するシンボ リックリンクの場合に、リンクを辿る

  -L  ディレクトリに対するシンボリックリンクに遭遇した 時には、そのリンクを全て辿る

  -P  シンボリックリンクを一切辿らない (デフォルト)

  --help 使い方を表示して終了する

  --version
  バージョン情報を表示して終了する

"""
